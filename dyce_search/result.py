"""Search results: one configuration G = {k, t} per lambda, its metrics, and the file format.

A :class:`SearchResult` is what a deployed model loads (``load_result``);
the JSON layout is documented in docs/result-format.md and is readable
without this package.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from numbers import Integral, Real

import numpy as np
import pandas as pd

from ._io import check_header, write_bytes_atomic, write_text_atomic
from .config import Config
from .costs import Costs
from .errors import CostError, ResultError
from .objective import check_lambda
from .provenance import Origin, cache_macs, check_combinable
from .units import DEFAULT_UNIT

logger = logging.getLogger(__name__)

FORMAT = "dyce-search-result"
VERSION = 2
#: Versions load_result reads; version 1 named the cost columns after MACs (:data:`V1_COLUMNS`).
READABLE = (1, VERSION)
_PARQUET_KEY = b"dyce-search-result"

#: Columns every table has, in this order; a configuration's own fields first.
CONFIG_COLUMNS = ("lambda", "method", "objective", "threshold", "exit_types", "thresholds")
METRIC_COLUMNS = ("rel_cost", "rel_accuracy", "accuracy", "cost", "unit", "f", "n_exits", "exits", "seconds")
COLUMNS = ("lambda", "method", "objective", "threshold", *METRIC_COLUMNS[:-1], "exit_types", "thresholds", "seconds")
#: Columns a caller must supply to the constructor (the rest are filled in).
REQUIRED = ("lambda", "method", "objective", "threshold", "rel_cost", "rel_accuracy", "accuracy", "cost", "seconds")
#: Metric columns recomputed by :meth:`SearchResult.evaluate`.
RECOMPUTED = ("rel_cost", "rel_accuracy", "accuracy", "cost", "unit", "f", "exits")
#: Version-1 column names and the version-2 names they were renamed to.
V1_COLUMNS = {"rel_macs": "rel_cost", "macs": "cost", "validation_rel_macs": "validation_rel_cost"}
_STR_COLUMNS = ("method", "objective", "threshold", "unit")
_FLOAT_COLUMNS = ("lambda", "rel_cost", "rel_accuracy", "accuracy", "cost", "f", "seconds")
# Stored once in the metadata (cost_unit), not per row.
_METADATA_COLUMNS = ("unit",)
#: Metadata keys a result must carry to be evaluated on another cache.
_MATCH_KEYS = ("positions", "exit_types", "num_classes")


class SearchResult:
    """Configurations found by a search, one per lambda, with their metrics.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per configuration with at least the columns ``lambda, method,
        objective, threshold, rel_cost`` (C, Eq. 11: the mean cost per sample
        over the original model's, both in one unit), ``rel_accuracy`` (A,
        Eq. 10), ``accuracy``, ``cost`` (mean cost per sample in the unit)
        and ``seconds``. ``unit`` (the cost unit, ``metadata["cost_unit"]``,
        default ``"macs"``; see :mod:`dyce_search.units`), ``exit_types`` (list[int],
        -1 = none), ``thresholds`` (list[float], NaN where none), ``n_exits``
        (enabled early exits), ``f`` (Eq. 12 at the row's lambda; NaN if
        unknown) and ``exits`` (E_n, Eq. 7, list[int] of P + 1, head last) are
        filled in from ``configs`` / with missing values when absent. Other
        columns are kept as they are.
    configs : list[Config]
        ``configs[i]`` is row i's configuration.
    metadata : dict
        ``method, threshold, objective, cost_unit`` and, from the search
        cache, ``backbone, weights, dataset, split, num_classes, synthetic,
        positions, exit_types, total_macs`` (see :func:`search_metadata`).

    Raises
    ------
    ResultError
        If a required column is missing, the lengths differ, the table's
        ``exit_types``/``thresholds`` disagree with ``configs``, or its
        ``unit`` column with ``metadata["cost_unit"]``.
    """

    def __init__(self, table: pd.DataFrame, configs, metadata: dict):
        if not isinstance(table, pd.DataFrame):
            raise ResultError(f"table must be a pandas DataFrame, got {type(table).__name__}")
        configs = list(configs)
        if not all(isinstance(c, Config) for c in configs):
            raise ResultError("configs must be a list of dyce_search.Config")
        if len(table) != len(configs):
            raise ResultError(f"the table has {len(table)} rows but there are {len(configs)} configurations")
        if not isinstance(metadata, dict):
            raise ResultError(f"metadata must be a dict, got {type(metadata).__name__}")
        missing = [c for c in REQUIRED if c not in table.columns]
        if missing:
            raise ResultError(f"result table lacks the column(s) {missing}")
        sizes = {c.n_positions for c in configs}
        if len(sizes) > 1:
            raise ResultError(f"configurations have different numbers of positions {sorted(sizes)}")
        table = table.reset_index(drop=True).copy()
        from_configs = {
            "exit_types": [[int(k) for k in c.exit_types] for c in configs],
            "thresholds": [[float(t) for t in c.thresholds] for c in configs],
        }
        for column, values in from_configs.items():
            if column in table.columns:
                for i, (given, expected) in enumerate(zip(table[column], values)):
                    if not _same_list(given, expected):
                        raise ResultError(f"row {i}: column {column!r} {list(given)!r} differs from configs[{i}]")
            table[column] = pd.Series(values, index=table.index, dtype=object)
        table["unit"] = _unit_column(table, metadata)
        if "n_exits" not in table.columns:
            table["n_exits"] = [int(c.enabled.sum()) for c in configs]
        if "f" not in table.columns:
            table["f"] = np.nan
        if "exits" not in table.columns:
            table["exits"] = pd.Series([None] * len(table), index=table.index, dtype=object)
        table = _normalise_dtypes(table)
        ordered = [c for c in COLUMNS if c in table.columns]
        table = table[ordered + [c for c in table.columns if c not in ordered]]
        self._table = table
        self._configs = configs
        self._metadata = dict(metadata)

    # ------------------------------------------------------------ building

    @classmethod
    def from_configs(
        cls,
        source,
        configs,
        lambdas,
        *,
        method: str,
        threshold: str,
        objective="paper",
        costs: Costs | None = None,
        seconds=None,
        extra: dict | None = None,
        metadata: dict | None = None,
        conservative: float | None = None,
    ) -> "SearchResult":
        """Evaluate ``configs`` and build the result a search returns (every search builds its rows here).

        Parameters
        ----------
        source : ExitCache or Problem
            The cache the search ran on, or its prepared
            :class:`~dyce_search.problem.Problem` (then ``objective`` and
            ``costs`` are taken from it).
        configs : list[Config]
            One configuration per row.
        lambdas : sequence of float
            lambda of each row (NaN for rows searched for a budget target).
        method, threshold : str
            Search method and threshold minimiser names (recorded).
        objective : {"paper", "normalized"}
        costs : Costs, optional
            Default: the cache's MACs.
        seconds : sequence of float, optional
            Search time per configuration (NaN if not given).
        extra : dict[str, sequence], optional
            Additional per-row columns (e.g. number of rounds).
        metadata : dict, optional
            Added to :func:`search_metadata`.
        conservative : float, optional
            f is the conservative objective (:mod:`dyce_search.conservative`)
            and a ``conservative_rel_accuracy`` column is added.
        """
        from .problem import Problem

        configs = list(configs)
        lambdas = [float(v) for v in lambdas]
        if len(lambdas) != len(configs):
            raise ResultError(f"{len(lambdas)} lambdas for {len(configs)} configurations")
        problem = source if isinstance(source, Problem) else Problem(source, costs, objective)
        defined = _defined(problem.objective)
        rows = []
        for lam, config in zip(lambdas, configs):
            ev = problem.evaluate(config, lam=lam if defined and not math.isnan(lam) else None,
                                  conservative=conservative)
            rows.append(
                {
                    "lambda": lam,
                    "method": method,
                    "objective": problem.objective.kind,
                    "threshold": threshold,
                    **_metric_row(ev, config),
                }
            )
            if conservative is not None:
                rows[-1]["conservative_rel_accuracy"] = ev.conservative_rel_accuracy
        table = pd.DataFrame(rows, columns=["lambda", "method", "objective", "threshold", *METRIC_COLUMNS[:-1]]
                             + (["conservative_rel_accuracy"] if conservative is not None else []))
        table["seconds"] = np.nan if seconds is None else np.asarray(seconds, dtype=np.float64)
        for name, values in (extra or {}).items():
            table[name] = list(values)
        md = search_metadata(problem, method=method, threshold=threshold)
        md.update(metadata or {})
        return cls(table, configs, md)

    # ------------------------------------------------------------ accessors

    @property
    def table(self) -> pd.DataFrame:
        """One row per configuration (a copy; see the class docstring for the columns)."""
        return self._table.copy()

    @property
    def configs(self) -> list:
        """``configs[i]`` is the configuration of ``table`` row i."""
        return list(self._configs)

    @property
    def metadata(self) -> dict:
        return dict(self._metadata)

    @property
    def unit(self) -> str:
        """Cost unit of ``rel_cost``'s numerator and denominator and of ``cost``: ``metadata["cost_unit"]``."""
        return str(self._metadata.get("cost_unit", DEFAULT_UNIT))

    @property
    def original_cost(self) -> float:
        """Cost per sample of the original model in :attr:`unit`: the denominator of C (Eq. 11).

        The total of the cost profile the search recorded (``metadata["costs"]``),
        else the search cache's ``total_macs``; for a table built without that
        metadata, ``cost / rel_cost`` of its first row with a finite, positive
        C; NaN if there is none.
        """
        md = self._metadata
        if md.get("costs") is not None:
            return Costs.from_dict(md["costs"], source="result metadata 'costs'").total
        if md.get("total_macs") is not None:
            return float(md["total_macs"])
        rel, cost = self._table["rel_cost"].to_numpy(float), self._table["cost"].to_numpy(float)
        ok = np.flatnonzero((rel > 0) & np.isfinite(rel) & np.isfinite(cost))
        return float(cost[ok[0]] / rel[ok[0]]) if ok.size else float("nan")

    @property
    def lambdas(self) -> np.ndarray:
        """float64 [len(self)]: lambda of each row."""
        return self._table["lambda"].to_numpy(dtype=np.float64)

    def __len__(self) -> int:
        return len(self._configs)

    def __repr__(self):
        md = self._metadata
        return (
            f"SearchResult({len(self)} configurations, backbone={md.get('backbone')!r}, "
            f"method={md.get('method')!r}, objective={md.get('objective')!r}, cost_unit={md.get('cost_unit')!r})"
        )

    def config(self, index: int | None = None, lam: float | None = None) -> Config:
        """The configuration of row ``index``, or the one searched at lambda ``lam``.

        Exactly one of ``index`` and ``lam`` must be given (neither is allowed
        for a one-row result). ``lam`` matches a stored lambda within 1e-9.

        Raises
        ------
        ResultError
            If no stored lambda matches ``lam`` (the message lists them).
        IndexError
            If ``index`` is out of range.
        """
        if index is not None and lam is not None:
            raise ValueError("give either index or lam, not both")
        if index is None and lam is None:
            if len(self) == 1:
                return self._configs[0]
            raise ValueError(f"this result holds {len(self)} configurations; give index or lam")
        if index is not None:
            return self._configs[int(index)]
        lambdas = self.lambdas
        hits = np.flatnonzero(np.abs(lambdas - float(lam)) <= 1e-9)
        if hits.size == 0:
            shown = ", ".join(f"{v:g}" for v in lambdas[:50]) + (" ..." if len(lambdas) > 50 else "")
            raise ResultError(f"no configuration for lambda={lam!r}; stored lambdas: {shown}")
        return self._configs[int(hits[0])]

    # ------------------------------------------------------------ analysis

    def evaluate(self, other_cache, costs: Costs | None = None, *, allow_mixed: bool = False) -> pd.DataFrame:
        """Recompute the metrics of every configuration on another cache (e.g. the test split).

        Parameters
        ----------
        other_cache : ExitCache
            Must have the same positions, exit types and number of classes as
            the search cache.
        costs : Costs, optional
            Default: the cost profile stored in ``metadata["costs"]`` (the one
            the search used), else the cache's MACs. Must be in the search's
            cost unit.
        allow_mixed : bool
            Accept a cache of another run (other weights, exits, preprocessing
            or MACs) or costs in another unit, with a logged warning; see
            :meth:`check_cache`.

        Returns
        -------
        pandas.DataFrame
            The table with ``rel_cost, rel_accuracy, accuracy, cost, unit, f,
            exits`` recomputed (``unit``: that of ``costs``) on ``other_cache`` (A_ori and f use that cache; f is
            NaN where the objective is undefined there, e.g. A_ori = 0).

        Raises
        ------
        ResultError
            Naming what differs (positions, exit types, number of classes) or
            the configuration that does not fit.
        """
        from .problem import Problem

        self.check_cache(other_cache, allow_mixed=allow_mixed)
        if costs is None:
            costs = self._stored_costs(other_cache, allow_mixed)
        else:
            unit = self._metadata.get("cost_unit")
            if unit is not None and costs.unit != unit:
                message = (f"the result was searched in cost unit {unit!r}; evaluating it in {costs.unit!r} puts "
                           "figures of two units side by side")
                if not allow_mixed:
                    raise ResultError(message + "; pass costs in the search's unit, or allow_mixed=True")
                logger.warning("%s (allowed by the caller)", message)
            costs = costs.check(other_cache, allow_mixed=allow_mixed)
            costs = costs.adopted_by(other_cache) if allow_mixed else costs
        table = self.table
        problems = {}
        metrics = []
        for i, (config, kind, lam) in enumerate(zip(self._configs, table["objective"], table["lambda"])):
            if kind not in problems:
                problems[kind] = Problem(other_cache, costs, kind)
            problem = problems[kind]
            use_lam = lam if _defined(problem.objective) and not math.isnan(lam) else None
            try:
                ev = problem.evaluate(config, lam=use_lam)
            except ResultError as e:
                raise ResultError(f"configuration {i} (lambda={lam:g}): {e}") from None
            metrics.append(_metric_row(ev, config))
        for column in RECOMPUTED:
            table[column] = pd.Series([row[column] for row in metrics], index=table.index, dtype=object)
        return _normalise_dtypes(table)

    def check_cache(self, cache, *, allow_mixed: bool = False) -> None:
        """Raise :class:`ResultError` naming what differs if ``cache`` does not match this result.

        Beyond positions, exit types and classes, the cache must come from the
        run of the search cache (same backbone weights, exits and
        preprocessing, :mod:`dyce_search.provenance`) and have the same MACs;
        ``allow_mixed=True`` turns that part into a logged warning.
        """
        md = self._metadata
        absent = [k for k in _MATCH_KEYS if k not in md]
        if absent:
            raise ResultError(f"result metadata lacks {absent}; cannot check it against a cache")
        for key, theirs in (
            ("positions", list(cache.positions)),
            ("exit_types", list(cache.exit_types)),
        ):
            mine = list(md[key])
            if mine != theirs:
                if len(mine) != len(theirs):
                    detail = f"{len(mine)} in the result vs {len(theirs)} in the cache"
                else:
                    i = next(i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b)
                    detail = f"{mine[i]!r} in the result vs {theirs[i]!r} in the cache at index {i}"
                raise ResultError(f"{key.replace('_', ' ')} differ: {detail}")
        if int(md["num_classes"]) != int(cache.num_classes):
            raise ResultError(f"number of classes differs: {md['num_classes']} in the result vs {cache.num_classes} in the cache")
        if "macs" in md:  # results saved before provenance records existed carry neither
            check_combinable(Origin.of_result(md), Origin.of_cache(cache, "the cache"), allow_mixed=allow_mixed,
                             error=ResultError)

    def _stored_costs(self, cache, allow_mixed: bool = False) -> Costs:
        doc = self._metadata.get("costs")
        if doc is None:
            return Costs.from_cache(cache)
        try:
            costs = Costs.from_dict(doc, source="result metadata 'costs'").check(cache, allow_mixed=allow_mixed)
        except CostError as e:
            raise ResultError(str(e)) from None
        return costs.adopted_by(cache) if allow_mixed else costs

    def pareto(self) -> "SearchResult":
        """The non-dominated rows (lower ``rel_cost``, higher ``rel_accuracy``), sorted by ``rel_cost``.

        A row is dropped if another has rel_cost <= and rel_accuracy >= with
        at least one strict; of rows with identical metrics the first is kept.
        If some rel_accuracy is NaN (A_ori = 0 on the cache), the absolute
        ``accuracy`` ranks the rows instead (the same order whenever A is defined).
        """
        cost = self._table["rel_cost"].to_numpy(np.float64)
        acc = self._table["rel_accuracy"].to_numpy(np.float64)
        if np.isnan(acc).any():
            acc = self._table["accuracy"].to_numpy(np.float64)
        # sort by cost, best accuracy first among equal costs, stable in row order
        order = np.lexsort((np.arange(len(cost)), -acc, cost))
        keep = []
        best = -np.inf
        for i in order:
            if acc[i] > best:
                keep.append(int(i))
                best = acc[i]
        return self.take(keep)

    def choose(self, max_drop=None, max_cost=None) -> tuple[int, str]:
        """The stored configuration that fits a budget: (row index, which figures decided it).

        Exactly one of ``max_drop`` and ``max_cost`` must be given.

        * ``max_drop``: the cheapest row whose drop fits. Rows certified by
          :func:`dyce_search.select` fit when their certified ``target`` is
          <= max_drop (cost: their cost on the validation split); a result
          without certification falls back to the search split's figures
          (drop ``1 - rel_accuracy``, cost ``rel_cost``, C of Eq. 11), which are in-sample.
        * ``max_cost``: the most accurate row whose cost is <= max_cost
          (certified rows: the smallest certified drop, then the validation
          accuracy; otherwise the search split's ``rel_accuracy``).

        Ties go to the more accurate, then the earlier row.

        Returns
        -------
        index : int
        basis : str
            ``"certified (delta=..., risk=...) on the validation split"`` or
            ``"search split (in-sample)"``.

        Raises
        ------
        ResultError
            If no stored configuration fits (the message gives the range stored).
        ValueError
            If both or neither budget is given, or a budget is not a finite number >= 0.
        """
        if (max_drop is None) == (max_cost is None):
            raise ValueError("give exactly one of max_drop and max_cost")
        value = float(max_drop if max_drop is not None else max_cost)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"the budget must be a finite number >= 0, got {value!r}")
        t = self._table
        certified = "certified" in t.columns and "target" in t.columns and bool(t["certified"].all())
        if certified:
            md = self._metadata
            basis = f"certified (delta={md.get('delta')}, risk={md.get('risk')}) on the validation split"
            drop = t["target"].to_numpy(float)
            cost = t["validation_rel_cost"].to_numpy(float)
            accuracy = -drop + 1e-9 * t["validation_rel_accuracy"].to_numpy(float)
        else:
            basis = "search split (in-sample)"
            accuracy = t["rel_accuracy"].to_numpy(float)
            drop = 1.0 - accuracy
            cost = t["rel_cost"].to_numpy(float)
        rows = np.arange(len(t))
        if max_drop is not None:
            fits = np.flatnonzero(drop <= value + 1e-12)
            if fits.size == 0:
                raise ResultError(f"no stored configuration has a drop <= {value:g} ({basis}); the smallest "
                                  f"stored is {np.nanmin(drop):g}")
            best = fits[np.lexsort((rows[fits], -accuracy[fits], cost[fits]))[0]]
        else:
            fits = np.flatnonzero(cost <= value + 1e-12)
            if fits.size == 0:
                raise ResultError(f"no stored configuration costs <= {value:g} ({basis}); the cheapest stored "
                                  f"costs {np.nanmin(cost):g}")
            best = fits[np.lexsort((rows[fits], cost[fits], -accuracy[fits]))[0]]
        return int(best), basis

    def most_accurate(self) -> int:
        """Row of the most accurate stored configuration (the cheaper on ties): where a deployed model starts."""
        t = self._table
        if "certified" in t.columns and "target" in t.columns and bool(t["certified"].all()):
            key_acc = -t["target"].to_numpy(float)
            cost = t["validation_rel_cost"].to_numpy(float)
        else:
            key_acc = t["rel_accuracy"].to_numpy(float)
            cost = t["rel_cost"].to_numpy(float)
        key_acc = np.where(np.isnan(key_acc), -np.inf, key_acc)
        return int(np.lexsort((np.arange(len(t)), cost, -key_acc))[0])

    def take(self, rows) -> "SearchResult":
        """A new result holding ``rows`` (positions) in the given order."""
        rows = [int(i) for i in rows]
        return SearchResult(self._table.iloc[rows], [self._configs[i] for i in rows], self._metadata)

    # -------------------------------------------------------------------- io

    def to_dict(self) -> dict:
        """The JSON document of docs/result-format.md."""
        entries = []
        extra_columns = [c for c in self._table.columns if c not in CONFIG_COLUMNS + _METADATA_COLUMNS]
        for i, config in enumerate(self._configs):
            row = self._table.iloc[i]
            cfg = config.to_dict()
            entries.append(
                {
                    "lambda": _jsonable(row["lambda"], "column 'lambda'"),  # null for budget-target rows
                    "method": str(row["method"]),
                    "objective": str(row["objective"]),
                    "threshold": str(row["threshold"]),
                    "exit_types": cfg["exit_types"],
                    "thresholds": cfg["thresholds"],
                    "metrics": {c: _jsonable(row[c], f"column {c!r}") for c in extra_columns},
                }
            )
        return {
            "format": FORMAT,
            "version": VERSION,
            "metadata": _jsonable(self._metadata, "metadata"),
            "configurations": entries,
        }

    @classmethod
    def from_dict(cls, doc: dict, source: str = "the result document") -> "SearchResult":
        """The result of a JSON document from :meth:`to_dict`, checked as :func:`load_result` checks a file.

        ``source`` starts every error message (e.g. the file embedding the document).
        """
        return _from_document(doc, source)

    def save(self, path) -> None:
        """Write the result atomically: JSON for ``*.json``, Parquet for ``*.parquet``.

        Raises
        ------
        ValueError
            For any other file extension.
        """
        path = os.fspath(path)
        ext = os.path.splitext(path)[1].lower()
        if ext == ".json":
            write_text_atomic(path, _format_document(self.to_dict()))
        elif ext == ".parquet":
            write_bytes_atomic(path, self._parquet_bytes())
        else:
            raise ValueError(f"{path}: unknown result file extension {ext!r} (use .json or .parquet)")

    def _parquet_bytes(self) -> bytes:
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrays, names = [], []
        for column in self._table.columns:
            if column in _METADATA_COLUMNS:
                continue
            values = self._table[column].tolist()
            if column == "exit_types":
                arr = pa.array(values, type=pa.list_(pa.int64()))
            elif column == "thresholds":
                arr = pa.array(values, type=pa.list_(pa.float64()), from_pandas=False)
            elif column == "exits":
                arr = pa.array(values, type=pa.list_(pa.int64()))
            elif column in _FLOAT_COLUMNS:
                arr = pa.array(self._table[column].to_numpy(np.float64), type=pa.float64())
            else:
                arr = pa.array(values)
            arrays.append(arr)
            names.append(str(column))
        header = {"format": FORMAT, "version": VERSION, "metadata": _jsonable(self._metadata, "metadata")}
        table = pa.Table.from_arrays(arrays, names=names)
        table = table.replace_schema_metadata({_PARQUET_KEY: json.dumps(header, allow_nan=False).encode()})
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        return sink.getvalue()


def _format_document(doc: dict) -> str:
    """JSON text with one metadata key and one configuration per line (diff- and grep-friendly)."""

    def dump(value):
        return json.dumps(value, allow_nan=False, ensure_ascii=False)

    md = doc["metadata"]
    md_lines = ",\n".join(f"  {dump(key)}: {dump(value)}" for key, value in md.items())
    entries = ",\n".join(f"  {dump(entry)}" for entry in doc["configurations"])
    return (
        "{\n"
        f' "format": {dump(doc["format"])},\n'
        f' "version": {dump(doc["version"])},\n'
        f' "metadata": {{\n{md_lines}\n }},\n'
        f' "configurations": [\n{entries}\n ]\n'
        "}\n"
    )


# ---------------------------------------------------------------- metadata


def search_metadata(source, *, method: str, threshold: str, objective: str | None = None,
                    costs: Costs | None = None) -> dict:
    """The ``metadata`` of a result searched on a cache.

    Parameters
    ----------
    source : ExitCache or Problem
        The search cache, or its prepared :class:`~dyce_search.problem.Problem`
        (whose objective and costs are then recorded).
    method, threshold : str
    objective : str, optional
        Objective kind (default: the problem's, else ``"paper"``).
    costs : Costs, optional
        Cost profile (default: the problem's, else the cache's MACs).

    Keys: ``method, threshold, objective, cost_unit, costs`` (the cost
    profile, format ``dyce-costs``), ``backbone, weights, dataset, split,
    num_classes, synthetic, positions, exit_types`` (names), ``total_macs,
    n_samples, labels_known, head_accuracy`` (A_ori of Eq. 10 on this cache,
    agreement with the head when labels are unknown), ``samples`` (the
    cache's :attr:`~dyce_search.ExitCache.samples_digest`) and ``split_from``
    (the provenance of a part made by :func:`dyce_search.split`, else null),
    ``provenance`` (the search cache's record, see :mod:`dyce_search.provenance`)
    and ``macs`` (the search cache's MACs), which every cache the result is
    later evaluated on must share.
    """
    from .problem import Problem

    if isinstance(source, Problem):
        cache, ref = source.cache, source.reference
        costs = source.costs if costs is None else costs
        objective = source.objective.kind if objective is None else objective
    else:
        from .objective import reference

        cache, ref = source, reference(source)
        costs = Costs.from_cache(cache) if costs is None else costs
        objective = "paper" if objective is None else objective
    md = cache.metadata or {}
    return {
        "method": method,
        "threshold": threshold,
        "objective": objective,
        "cost_unit": costs.unit,
        "backbone": md.get("backbone"),
        "weights": md.get("weights"),
        "dataset": md.get("dataset"),
        "split": md.get("split"),
        "num_classes": int(cache.num_classes),
        "synthetic": bool(md.get("synthetic", False)),
        "positions": list(cache.positions),
        "exit_types": list(cache.exit_types),
        "total_macs": int(cache.total_macs),
        "n_samples": int(cache.n_samples),
        "labels_known": bool(ref.labels_known),
        "head_accuracy": float(ref.head_accuracy),
        "samples": cache.samples_digest,
        "split_from": md.get("split_from"),
        "costs": costs.to_dict(),
        "provenance": md.get("provenance"),
        "macs": cache_macs(cache),
    }


# -------------------------------------------------------------------- load


def load_result(path) -> SearchResult:
    """Read a result written by :meth:`SearchResult.save` (JSON or Parquet, by content).

    The configurations are checked as :func:`dyce_search.evaluate` checks them
    against a cache, here against the result's own metadata: lambda in
    [0, 1] (or null: a row without one), as many positions as
    ``metadata["positions"]``, exit type indices from -1 (none) to below
    ``len(metadata["exit_types"])``, a finite threshold at every enabled position.

    Raises
    ------
    ResultError
        Naming the file, the row (``configurations[i]`` in JSON, ``row i`` in
        Parquet) and the field at fault if the file is malformed.
    OSError
        If the file cannot be read.
    """
    path = os.fspath(path)
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:4] == b"PAR1":
        return _from_parquet(data, path)
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultError(f"{path}: neither Parquet nor valid JSON ({e})") from None
    return _from_document(doc, path)


def _check_header(doc, path) -> tuple[dict, int]:
    check_header(doc, FORMAT, READABLE, path, ResultError)
    md = doc.get("metadata")
    if not isinstance(md, dict):
        raise ResultError(f"{path}: field 'metadata' must be an object")
    return md, doc["version"]


def _upgrade(table: pd.DataFrame, version: int, path) -> pd.DataFrame:
    """A table read from a file of ``version`` with the current column names (:data:`V1_COLUMNS`)."""
    if version == VERSION:
        return table
    clash = [new for old, new in V1_COLUMNS.items() if old in table.columns and new in table.columns]
    if clash:
        raise ResultError(f"{path}: a version-{version} file with both old and new column names {clash}")
    return table.rename(columns=V1_COLUMNS)


def _from_document(doc, path) -> SearchResult:
    md, version = _check_header(doc, path)
    entries = doc.get("configurations")
    if not isinstance(entries, list):
        raise ResultError(f"{path}: field 'configurations' must be a list")
    rows, configs = [], []
    for i, entry in enumerate(entries):
        where = f"{path}: configurations[{i}]"
        if not isinstance(entry, dict):
            raise ResultError(f"{where} must be an object")
        for key in CONFIG_COLUMNS:
            if key not in entry:
                raise ResultError(f"{where} lacks field {key!r}")
        metrics = entry.get("metrics", {})
        if not isinstance(metrics, dict):
            raise ResultError(f"{where}.metrics must be an object")
        configs.append(_config_from_fields(entry["exit_types"], entry["thresholds"], where, md))
        row = {key: entry[key] for key in ("lambda", "method", "objective", "threshold")}
        row.update(metrics)
        rows.append(row)
    table = _upgrade(pd.DataFrame(rows), version, path)
    if not rows:
        table = pd.DataFrame(columns=list(REQUIRED))
    return _build(table, configs, md, path, "configurations[{}]")


def _from_parquet(data: bytes, path) -> SearchResult:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as e:
        raise ResultError(f"{path}: not a readable Parquet file ({e})") from None
    raw = (table.schema.metadata or {}).get(_PARQUET_KEY)
    if raw is None:
        raise ResultError(f"{path}: Parquet file lacks the {_PARQUET_KEY.decode()!r} schema metadata")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultError(f"{path}: schema metadata {_PARQUET_KEY.decode()!r} is not valid JSON ({e})") from None
    md, version = _check_header(header, path)
    for key in ("exit_types", "thresholds"):
        if key not in table.column_names:
            raise ResultError(f"{path}: lacks column {key!r}")
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    configs = [
        _config_from_fields(k, t, f"{path}: row {i}", md)
        for i, (k, t) in enumerate(zip(columns["exit_types"], columns["thresholds"]))
    ]
    frame = pd.DataFrame({name: values for name, values in columns.items() if name not in ("exit_types", "thresholds")})
    return _build(_upgrade(frame, version, path), configs, md, path, "row {}")


def _build(table, configs, md, path, row_name) -> SearchResult:
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise ResultError(f"{path}: lacks field(s) {missing}")
    for column in _FLOAT_COLUMNS:
        if column in table.columns:
            bad = [v for v in table[column] if v is not None and (isinstance(v, bool) or not isinstance(v, Real))]
            if bad:
                raise ResultError(f"{path}: field {column!r} must hold numbers, got {bad[0]!r}")
    for column in (c for c in _STR_COLUMNS if c in table.columns):  # "unit" is metadata, rarely a field
        bad = [v for v in table[column] if not isinstance(v, str)]
        if bad:
            raise ResultError(f"{path}: field {column!r} must hold strings, got {bad[0]!r}")
    for i, lam in enumerate(table["lambda"]):
        if lam is None or math.isnan(lam):  # null: a budget-target row, which has no lambda
            continue
        try:
            check_lambda(lam)  # the range evaluate() and the searches accept
        except ValueError:
            raise ResultError(f"{path}: {row_name.format(i)}: field 'lambda' must be in [0, 1] or null, "
                              f"got {float(lam)!r}") from None
    try:
        return SearchResult(table, configs, md)
    except ResultError as e:
        raise ResultError(f"{path}: {e}") from None


def _config_from_fields(exit_types, thresholds, where, md) -> Config:
    """Row ``where``'s configuration, checked against the result's metadata (see :func:`load_result`)."""
    if not isinstance(exit_types, list) or not all(
        isinstance(k, Integral) and not isinstance(k, bool) for k in exit_types
    ):
        raise ResultError(f"{where}: field 'exit_types' must be a list of integers")
    if not isinstance(thresholds, list) or not all(
        v is None or (isinstance(v, Real) and not isinstance(v, bool)) for v in thresholds
    ):
        raise ResultError(f"{where}: field 'thresholds' must be a list of numbers or null")
    if len(exit_types) != len(thresholds):
        raise ResultError(f"{where}: 'exit_types' has {len(exit_types)} entries but 'thresholds' has {len(thresholds)}")
    positions, types = md.get("positions"), md.get("exit_types")
    positions = list(positions) if isinstance(positions, list) else None
    n_types = len(types) if isinstance(types, list) else None

    def at(p):
        return f"position {p}" + (f" ({positions[p]!r})" if positions is not None else "")

    if positions is not None and len(exit_types) != len(positions):
        raise ResultError(
            f"{where}: field 'exit_types' has {len(exit_types)} positions, the metadata lists {len(positions)} "
            f"({', '.join(map(str, positions))})"
        )
    for p, (k, v) in enumerate(zip(exit_types, thresholds)):
        if k < -1 or (n_types is not None and k >= n_types):
            allowed = "-1 (none) or more" if n_types is None else (
                f"-1 (none) to {n_types - 1} (the metadata lists {n_types} exit types)")
            raise ResultError(f"{where}: field 'exit_types' holds {k} at {at(p)}; allowed: {allowed}")
        if k >= 0 and (v is None or not math.isfinite(v)):
            shown = "null" if v is None else repr(float(v))
            raise ResultError(f"{where}: field 'thresholds': every enabled position needs a threshold, a finite "
                              f"number; {at(p)} has {shown}")
    t = [math.nan if v is None else float(v) for v in thresholds]
    try:
        return Config(np.asarray(exit_types, np.int64).reshape(-1), np.asarray(t, np.float64).reshape(-1))
    except ValueError as e:
        raise ResultError(f"{where}: {e}") from None


# ------------------------------------------------------------------ helpers


def _defined(objective) -> bool:
    """Whether f can be computed (else rows get f = NaN and, if A_ori = 0, rel_accuracy = NaN)."""
    try:
        objective.check_defined()
    except ValueError:
        return False
    return True


def _metric_row(ev, config) -> dict:
    return {
        "rel_cost": ev.rel_cost,
        "rel_accuracy": ev.rel_accuracy,
        "accuracy": ev.accuracy,
        "cost": ev.cost,
        "unit": ev.unit,
        "f": math.nan if ev.objective is None else ev.objective,
        "n_exits": int(config.enabled.sum()),
        "exits": [int(v) for v in ev.exits],
    }


def _unit_column(table: pd.DataFrame, metadata: dict) -> list:
    """The ``unit`` of every row: ``metadata["cost_unit"]`` (a result has one unit), checked against a given column."""
    unit = metadata.get("cost_unit", DEFAULT_UNIT)
    if not isinstance(unit, str) or not unit:
        raise ResultError(f"metadata 'cost_unit' must be a non-empty string, got {unit!r}")
    if "unit" in table.columns:
        for i, given in enumerate(table["unit"]):
            if given != unit:
                raise ResultError(f"row {i}: column 'unit' is {given!r} but metadata 'cost_unit' is {unit!r}")
    return [unit] * len(table)


def _same_list(given, expected) -> bool:
    try:
        a = np.asarray(list(given), dtype=np.float64)
    except (TypeError, ValueError):
        return False
    b = np.asarray(expected, dtype=np.float64)
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))


def _normalise_dtypes(table: pd.DataFrame) -> pd.DataFrame:
    for column in _FLOAT_COLUMNS:
        if column in table.columns:
            table[column] = pd.to_numeric(table[column].map(lambda v: np.nan if v is None else v)).astype(np.float64)
    if "n_exits" in table.columns:
        table["n_exits"] = table["n_exits"].astype(np.int64)
    for column in _STR_COLUMNS:
        if column in table.columns:
            table[column] = table[column].astype(object)
    if "exits" in table.columns:
        table["exits"] = pd.Series(
            [None if v is None else [int(x) for x in v] for v in table["exits"]], index=table.index, dtype=object
        )
    return table


def _jsonable(value, where):
    """Plain JSON data: numpy scalars/arrays to Python, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v, where) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        value = float(value)
        return value if math.isfinite(value) else None
    if value is pd.NA or value is pd.NaT:
        return None
    raise ResultError(f"{where}: value {value!r} of type {type(value).__name__} cannot be written to a result file")
