"""Table II: the least relative MACs that keep the accuracy drop within given levels.

The paper's Table II lists, per base model, the smallest MACs (relative to the
original model) among the searched configurations whose accuracy drop,
relative to the original model, is at most 5 %, 2 % and 0.5 %. With A the
relative accuracy of Eq. 10, the drop of a configuration is ``1 - A``.
A level that no configuration reaches is reported as "not reached" (NaN in
the numeric frames), never as zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from dyce_search import ResultError

#: The drop levels of the paper's Table II, as fractions.
PAPER_LEVELS = (0.05, 0.02, 0.005)
NOT_REACHED = "not reached"
# A relative accuracy computed as n_correct / (M A_ori) can land a rounding
# step below 1 - level for a configuration that exactly meets it.
_TOLERANCE = 1e-12


def _check_levels(levels) -> tuple[float, ...]:
    out = []
    for level in levels:
        value = float(level)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"accuracy drop levels must be in [0, 1), got {level!r}")
        out.append(value)
    if not out:
        raise ValueError("at least one accuracy drop level is needed")
    return tuple(out)


def level_label(level: float) -> str:
    """Column label of a drop level, e.g. ``0.005 -> "0.5%"``."""
    return f"{100 * level:.1f}%"


def required_macs(table: pd.DataFrame, levels: Sequence[float] = PAPER_LEVELS) -> pd.DataFrame:
    """For each drop level, the cheapest configuration with ``1 - rel_accuracy <= level``.

    Parameters
    ----------
    table : DataFrame
        A search result table with at least ``rel_macs`` (C, Eq. 11) and
        ``rel_accuracy`` (A, Eq. 10); ``lambda`` and ``accuracy`` are carried
        along when present.
    levels : sequence of float
        Allowed relative accuracy drops as fractions (default 5 %, 2 %, 0.5 %).

    Returns
    -------
    DataFrame
        One row per level: ``level``, ``reached`` (bool), ``rel_macs``,
        ``rel_accuracy``, ``accuracy``, ``lambda`` and ``row`` (position of
        the chosen row in ``table``, -1 if not reached). Values are NaN where
        the level is not reached. Ties in ``rel_macs`` go to the more accurate
        configuration.
    """
    levels = _check_levels(levels)
    missing = [c for c in ("rel_macs", "rel_accuracy") if c not in table.columns]
    if missing:
        raise ResultError(f"table lacks column(s) {missing} needed for Table II")
    cost = table["rel_macs"].to_numpy(float)
    rel_acc = table["rel_accuracy"].to_numpy(float)
    acc = table["accuracy"].to_numpy(float) if "accuracy" in table else np.full(len(table), np.nan)
    lam = table["lambda"].to_numpy(float) if "lambda" in table else np.full(len(table), np.nan)
    rows = []
    for level in levels:
        ok = np.flatnonzero((1.0 - rel_acc <= level + _TOLERANCE) & np.isfinite(cost))
        if ok.size == 0:
            rows.append(dict(level=level, reached=False, rel_macs=np.nan, rel_accuracy=np.nan,
                             accuracy=np.nan, **{"lambda": np.nan}, row=-1))
            continue
        i = int(ok[np.lexsort((-rel_acc[ok], cost[ok]))[0]])
        rows.append(dict(level=level, reached=True, rel_macs=cost[i], rel_accuracy=rel_acc[i],
                         accuracy=acc[i], **{"lambda": lam[i]}, row=i))
    return pd.DataFrame(rows, columns=["level", "reached", "rel_macs", "rel_accuracy", "accuracy", "lambda", "row"])


def table_ii(results: Mapping, levels: Sequence[float] = PAPER_LEVELS) -> pd.DataFrame:
    """Table II for several searched models (long form).

    Parameters
    ----------
    results : mapping of str to SearchResult
        Model name -> its search result. All must classify the same number of
        classes (one table compares base models on one task).
    levels : sequence of float

    Returns
    -------
    DataFrame
        :func:`required_macs` for every model with ``model``,
        ``base_accuracy`` (A_ori) and ``total_macs`` columns in front.

    Raises
    ------
    ResultError
        If the results disagree on ``num_classes`` or none are given.
    """
    from .curves import base_accuracy

    if not results:
        raise ResultError("Table II needs at least one search result")
    classes = {str(name): r.metadata.get("num_classes") for name, r in results.items()}
    if len({c for c in classes.values()}) > 1:
        listing = ", ".join(f"{n}: {c}" for n, c in classes.items())
        raise ResultError(f"cannot compare models with different class counts in one Table II ({listing})")
    frames = []
    for name, result in results.items():
        f = required_macs(result.table.reset_index(drop=True), levels)
        f.insert(0, "model", str(name))
        f.insert(1, "base_accuracy", base_accuracy(result))
        f.insert(2, "total_macs", result.metadata.get("total_macs"))
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def table_ii_wide(long: pd.DataFrame) -> pd.DataFrame:
    """The printed Table II: one row per model, one column per level, as text.

    Cells read like ``"64.1%"`` (relative MACs) or ``"not reached"``; the
    ``base accuracy`` column gives A_ori in percent.
    """
    models = list(dict.fromkeys(long["model"]))
    levels = list(dict.fromkeys(long["level"]))
    out = pd.DataFrame(index=pd.Index(models, name="model"))
    base = long.groupby("model", sort=False)["base_accuracy"].first()
    out["base accuracy"] = [f"{100 * base[m]:.2f}%" for m in models]
    for level in levels:
        sel = long[long["level"] == level].set_index("model")
        out[f"MACs at drop ≤ {level_label(level)}"] = [
            f"{100 * sel.loc[m, 'rel_macs']:.1f}%" if sel.loc[m, "reached"] else NOT_REACHED for m in models
        ]
    return out


def to_markdown(frame: pd.DataFrame, index: bool = True) -> str:
    """A GitHub-flavoured Markdown table of a small text/number frame (no extra dependency)."""
    cols = ([frame.index.name or ""] if index else []) + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for key, row in frame.iterrows():
        cells = ([str(key)] if index else []) + [_cell(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.4g}"
    return str(v).replace("|", "\\|")


def rows_at_levels(result, levels: Sequence[float] = PAPER_LEVELS) -> tuple[list[int], list[str]]:
    """Configurations to inspect: the Table II choice at each reached drop level.

    Levels that select the same configuration are merged. If no level is
    reached, the most accurate configuration on the Pareto front is used so
    that there is always something to show.

    Returns
    -------
    rows : list of int
        Row indices into ``result.table`` / ``result.configs``.
    labels : list of str
        e.g. ``"drop ≤ 2.0%: 70.8% MACs"``.
    """
    from .curves import tradeoff_curve

    table = result.table.reset_index(drop=True)
    chosen = required_macs(table, levels)
    levels_of: dict[int, list[float]] = {}
    cost_of: dict[int, float] = {}
    for _, r in chosen[chosen["reached"]].iterrows():
        levels_of.setdefault(int(r["row"]), []).append(float(r["level"]))
        cost_of[int(r["row"])] = float(r["rel_macs"])
    rows = list(levels_of)
    labels = [
        f"drop ≤ {' / '.join(level_label(v) for v in levels_of[row])}: {100 * cost_of[row]:.1f}% MACs" for row in rows
    ]
    if not rows:
        front = tradeoff_curve(result, pareto=True)
        if front.empty:
            raise ResultError("the search result has no configuration with finite cost and accuracy")
        best = front.iloc[-1]
        rows.append(int(best["row"]))
        drop = 100 * (1 - best["rel_accuracy"])
        labels.append(f"most accurate: {100 * best['rel_macs']:.1f}% MACs, drop {drop:.1f}%")
    return rows, labels
