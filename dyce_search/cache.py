"""The exit cache: every exit's per-sample top-1 prediction and confidence.

One cache holds one backbone on one data split. See docs/cache-format.md for
the on-disk Parquet layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import _cache_checks as checks
from . import _cache_schema as schema
from ._io import atomic_target
from .errors import CacheError


@dataclass(frozen=True, eq=False)
class ExitCache:
    """Recorded outputs of every exit of one backbone on one data split.

    Shapes use P = number of early exit positions (the head is position P),
    K = number of exit types, M = number of samples.

    The constructor coerces every array to the dtype below (C-contiguous,
    copying only when needed), sets absent exits to pred -1 / conf NaN /
    MACs 0, fills the standard keys of ``metadata`` from the arrays, and
    raises :class:`~dyce_search.CacheError` naming the array, column or value
    at fault for any inconsistency (see docs/cache-format.md, "Validation").

    Attributes
    ----------
    label : int32 [M]
        Ground-truth class, -1 where unknown.
    pred : int32 [P, K, M]
        Top-1 class of exit (p, k); -1 where the exit is absent.
    conf : float32 [P, K, M]
        Top-1 softmax probability of exit (p, k) (the paper's max(y~_{n,k}));
        NaN where the exit is absent.
    final_pred : int32 [M]
        Top-1 class of the original head (f_{N,1}).
    final_conf : float32 [M]
        Top-1 softmax probability of the original head.
    backbone_macs : int64 [P]
        Cumulative backbone MACs from the input to the output of each early position.
    exit_macs : int64 [P, K]
        MACs of exit (p, k); 0 where absent.
    available : bool [P, K]
        Whether exit type k exists at position p.
    total_macs : int
        MACs of the whole original model (all segments and its head).
    positions : tuple[str, ...]
        Names of the P early positions, in depth order.
    exit_types : tuple[str, ...]
        Names of the K exit types.
    sample : int64 [M]
        Sample identifiers (index into the dataset split).
    num_classes : int
    metadata : dict
        The full ``dyce`` metadata (backbone, weights, dataset, split, ...).
    """

    label: np.ndarray
    pred: np.ndarray
    conf: np.ndarray
    final_pred: np.ndarray
    final_conf: np.ndarray
    backbone_macs: np.ndarray
    exit_macs: np.ndarray
    available: np.ndarray
    total_macs: int
    positions: tuple
    exit_types: tuple
    sample: np.ndarray
    num_classes: int
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        num_classes = checks.as_int("num_classes", self.num_classes)
        if num_classes < 1:
            raise CacheError(f"num_classes must be >= 1, got {num_classes}")
        total_macs = checks.as_int("total_macs", self.total_macs)

        pred = checks.as_int_array("pred", self.pred, np.int32)
        conf = checks.as_float_array("conf", self.conf)
        if pred.ndim != 3:
            raise CacheError(f"pred must be 3-D [P, K, M], got shape {pred.shape}")
        P, K, M = pred.shape
        checks.check_shape("conf", conf, pred.shape, "[P, K, M] like pred")
        if M == 0:
            raise CacheError("the cache has zero samples")
        if P == 0 or K == 0:
            raise CacheError(f"the cache needs at least one early position and one exit type, got P={P}, K={K}")

        label = checks.as_int_array("label", self.label, np.int32)
        sample = checks.as_int_array("sample", self.sample, np.int64)
        final_pred = checks.as_int_array("final_pred", self.final_pred, np.int32)
        final_conf = checks.as_float_array("final_conf", self.final_conf)
        for name, a in (("label", label), ("sample", sample), ("final_pred", final_pred), ("final_conf", final_conf)):
            checks.check_shape(name, a, (M,), "[M], M = samples in pred/conf")
        backbone_macs = checks.as_int_array("backbone_macs", self.backbone_macs, np.int64)
        exit_macs = checks.as_int_array("exit_macs", self.exit_macs, np.int64)
        available = checks.as_bool_array("available", self.available)
        checks.check_shape("backbone_macs", backbone_macs, (P,), "[P]")
        checks.check_shape("exit_macs", exit_macs, (P, K), "[P, K]")
        checks.check_shape("available", available, (P, K), "[P, K]")
        positions = checks.as_names("positions", self.positions, P, "positions")
        exit_types = checks.as_names("exit_types", self.exit_types, K, "exit types")

        checks.check_classes(schema.LABEL, label, -1, num_classes, sample, "label")
        checks.check_classes(schema.FINAL_PRED, final_pred, 0, num_classes, sample, "prediction")
        checks.check_unit_interval(schema.FINAL_CONF, final_conf, sample)
        pred, conf, exit_macs = checks.normalise_absent(pred, conf, exit_macs, available)
        checks.check_exits(pred, conf, available, num_classes, exit_types, sample)
        checks.check_macs(backbone_macs, exit_macs, available, total_macs, positions, exit_types)
        metadata = checks.canonical_metadata(
            self.metadata,
            positions=positions,
            exit_types=exit_types,
            backbone_macs=backbone_macs,
            exit_macs=exit_macs,
            available=available,
            total_macs=total_macs,
            num_classes=num_classes,
        )
        for name, value in (
            ("label", label),
            ("pred", pred),
            ("conf", conf),
            ("final_pred", final_pred),
            ("final_conf", final_conf),
            ("backbone_macs", backbone_macs),
            ("exit_macs", exit_macs),
            ("available", available),
            ("total_macs", total_macs),
            ("positions", positions),
            ("exit_types", exit_types),
            ("sample", sample),
            ("num_classes", num_classes),
            ("metadata", metadata),
        ):
            object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ sizes

    @property
    def n_samples(self) -> int:
        return int(self.label.shape[0])

    @property
    def n_positions(self) -> int:
        return int(self.conf.shape[0])

    @property
    def n_types(self) -> int:
        return int(self.conf.shape[1])

    @property
    def backbone(self):
        """Backbone name from the metadata (None if not recorded)."""
        return self.metadata.get("backbone")

    @property
    def synthetic(self) -> bool:
        return bool(self.metadata.get("synthetic", False))

    # --------------------------------------------------------------- summaries

    @property
    def head_accuracy(self) -> float:
        """A_ori (Eq. 10) exactly as searches and evaluations use it (:func:`dyce_search.objective.head_accuracy`).

        The head's accuracy on the labels when every label is known; when any
        label is unknown (-1) accuracy is agreement with the head, so 1.0.
        """
        from .objective import head_accuracy

        return head_accuracy(self)

    def standalone_accuracy(self, against: str = "label") -> np.ndarray:
        """Accuracy of every exit used alone (all samples leave at it), float64 [P, K], NaN where absent.

        Parameters
        ----------
        against : {"label", "head"}
            ``"label"``: agreement with the known labels (samples with label -1
            are skipped; all NaN if none is known). ``"head"``: agreement with
            the original head's prediction, which needs no labels.
        """
        if against == "label":
            known = self.label >= 0
            reference = self.label
            if not known.all():
                if not known.any():
                    return np.full((self.n_positions, self.n_types), np.nan)
                reference = self.label[known]
                hits = self.pred[:, :, known] == reference
            else:
                hits = self.pred == reference
        elif against == "head":
            hits = self.pred == self.final_pred
        else:
            raise ValueError(f"against must be 'label' or 'head', got {against!r}")
        acc = hits.mean(axis=2, dtype=np.float64)
        acc[~self.available] = np.nan
        return acc

    @property
    def fingerprint(self) -> dict:
        """What two caches must share to be searched/evaluated together.

        ``{"backbone", "num_classes", "positions", "exit_types"}``; compare with
        ``==`` or use :meth:`check_compatible` for a message naming the difference.
        """
        return {
            "backbone": self.backbone,
            "num_classes": self.num_classes,
            "positions": list(self.positions),
            "exit_types": list(self.exit_types),
        }

    def check_compatible(self, other: ExitCache, *, backbone: bool = True) -> None:
        """Raise CacheError naming what differs if ``other`` has another backbone, classes, positions or exit types.

        ``backbone=False`` leaves the backbone name out (for callers that
        compare it themselves, e.g. :func:`dyce_search.provenance.check_caches`
        with its override).
        """
        if not isinstance(other, ExitCache):
            raise TypeError(f"expected an ExitCache, got {type(other).__name__}")
        mine, theirs = self.fingerprint, other.fingerprint
        diffs = []
        for key in ("backbone", "num_classes")[0 if backbone else 1:]:
            if mine[key] != theirs[key]:
                diffs.append(f"{key} {mine[key]!r} vs {theirs[key]!r}")
        for key in ("positions", "exit_types"):
            a, b = mine[key], theirs[key]
            if a != b:
                if len(a) != len(b):
                    diffs.append(f"{len(a)} vs {len(b)} {key.replace('_', ' ')}")
                else:
                    i = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
                    diffs.append(f"{key} differ at index {i}: {a[i]!r} vs {b[i]!r}")
        if diffs:
            raise CacheError(f"caches are not compatible: {'; '.join(diffs)}")

    def equals(self, other: ExitCache) -> bool:
        """True if every array, name and the metadata are identical (NaN equal to NaN)."""
        if not isinstance(other, ExitCache):
            return False
        arrays = ("label", "pred", "final_pred", "final_conf", "backbone_macs", "exit_macs", "available", "sample")
        return (
            all(np.array_equal(getattr(self, n), getattr(other, n)) for n in arrays)
            and np.array_equal(self.conf, other.conf, equal_nan=True)
            and (self.total_macs, self.positions, self.exit_types, self.num_classes, self.metadata)
            == (other.total_macs, other.positions, other.exit_types, other.num_classes, other.metadata)
        )

    def __repr__(self) -> str:
        md = self.metadata
        where = "/".join(str(v) for v in (md.get("dataset"), md.get("split")) if v is not None)
        n_avail = int(self.available.sum())
        known = int((self.label >= 0).sum())
        acc = f"head accuracy {100 * self.head_accuracy:.2f}%" if known == self.n_samples else "no labels"
        parts = [
            f"{self.backbone or 'unknown backbone'}" + (f" on {where}" if where else ""),
            f"{self.n_samples} samples",
            f"{self.n_positions} positions x {self.n_types} exit types"
            + ("" if n_avail == self.available.size else f" ({n_avail} available)"),
            f"{self.num_classes} classes",
            acc + (f" ({known} of {self.n_samples} labelled: accuracy is agreement with the head)"
                   if 0 < known < self.n_samples else ""),
            f"{self.total_macs / 1e9:.3g} GMACs",
        ]
        if self.synthetic:
            parts.append("synthetic")
        return f"ExitCache({', '.join(parts)})"

    # ---------------------------------------------------------------- subsets

    def take(self, indices) -> ExitCache:
        """The cache restricted to some samples, in the given order.

        Parameters
        ----------
        indices : int array [m] or bool array [M]
            Row indices in ``[0, M)`` (repeats allowed, e.g. for a bootstrap) or a mask.
        """
        idx = np.asarray(indices)
        if idx.size == 0:
            raise CacheError("take() would leave zero samples")
        if idx.dtype == np.bool_:
            if idx.shape != (self.n_samples,):
                raise IndexError(f"boolean mask has shape {idx.shape}, expected ({self.n_samples},)")
            idx = np.flatnonzero(idx)
        elif idx.dtype.kind in "iu" and idx.ndim == 1:
            if idx.size and (idx.min() < 0 or idx.max() >= self.n_samples):
                bad = idx[(idx < 0) | (idx >= self.n_samples)][0]
                raise IndexError(f"sample index {bad} out of range [0, {self.n_samples})")
        else:
            raise IndexError(f"indices must be a 1-D integer array or a boolean mask, got {idx.dtype} {idx.shape}")
        if idx.size == 0:  # an all-False mask
            raise CacheError("take() would leave zero samples")
        return replace(
            self,
            label=self.label[idx],
            pred=np.take(self.pred, idx, axis=2),
            conf=np.take(self.conf, idx, axis=2),
            final_pred=self.final_pred[idx],
            final_conf=self.final_conf[idx],
            sample=self.sample[idx],
        )

    def split(self, fractions, seed=0, names=None) -> tuple:
        """Random disjoint parts of the samples, e.g. search / validation / test for a cache recorded once.

        Parameters
        ----------
        fractions : float or sequence of float
            One float f in (0, 1): two parts, the first with ``round(f * M)``
            samples. A sequence: one part per entry, each in (0, 1] and summing
            to at most 1 (the rest of the samples is left out); sizes are
            ``floor(f_i * M)`` plus one for the largest remainders, so they add
            up to ``round(sum(f) * M)``. Every part needs at least one sample.
        seed : int
            Seed of the permutation; equal arguments give equal parts.
        names : sequence of str, optional
            Part names (default ``search, validation, test`` for three parts,
            ``search, validation`` for two, else ``part0, part1, ...``).

        Returns
        -------
        tuple of ExitCache
            Each keeps the original sample order and sample ids; its
            ``metadata["split"]`` is ``"<split>/<name>"`` and
            ``metadata["split_from"]`` records the parent's samples digest,
            the seed, the fractions and the part's name, so that tools can
            tell parts of one split apart (see :attr:`samples_digest`).
        """
        scalar = np.ndim(fractions) == 0
        if scalar:
            try:
                f = float(fractions)
            except (TypeError, ValueError):
                raise ValueError(f"fractions must be numbers, got {fractions!r}") from None
            if not 0.0 < f < 1.0:
                raise ValueError(f"fraction must be in (0, 1), got {fractions!r}")
            shares = [f, 1.0 - f]
        else:
            try:
                shares = [float(v) for v in fractions]
            except (TypeError, ValueError):
                raise ValueError(f"fractions must be numbers, got {fractions!r}") from None
            if not shares or any(not 0.0 < v <= 1.0 for v in shares) or sum(shares) > 1.0 + 1e-9:
                raise ValueError(f"fractions must be in (0, 1] and sum to at most 1, got {fractions!r}")
        if names is None:
            names = {2: ("search", "validation"), 3: ("search", "validation", "test")}.get(
                len(shares), tuple(f"part{i}" for i in range(len(shares))))
        names = tuple(str(n) for n in names)
        if len(names) != len(shares) or len(set(names)) != len(names):
            raise ValueError(f"need {len(shares)} distinct part names, got {names!r}")
        M = self.n_samples
        if scalar:
            sizes = [int(round(shares[0] * M))]
            sizes.append(M - sizes[0])
        else:
            exact = np.array(shares) * M
            sizes = np.floor(exact).astype(int)
            extra = int(round(sum(shares) * M)) - int(sizes.sum())
            for i in np.argsort(-(exact - sizes), kind="stable")[:max(extra, 0)]:
                sizes[i] += 1
            sizes = [int(s) for s in sizes]
        if min(sizes) < 1:
            what = f"fraction={fractions}" if scalar else f"fractions={list(fractions)}"
            raise ValueError(f"{what} of {M} samples leaves a part empty (sizes {sizes})")
        order = np.random.default_rng(seed).permutation(M)
        parent = self.metadata.get("split") or "split"
        provenance = {"samples": self.samples_digest, "seed": int(seed) if np.ndim(seed) == 0 else None,
                      "fractions": shares}
        parts, start = [], 0
        for name, size in zip(names, sizes):
            mask = np.zeros(M, dtype=bool)
            mask[order[start:start + size]] = True
            start += size
            part = self.take(mask)
            md = dict(part.metadata, split=f"{parent}/{name}", split_from=dict(provenance, part=name))
            parts.append(replace(part, metadata=md))
        return tuple(parts)

    @property
    def samples_digest(self) -> str:
        """SHA-256 (hex, 32 digits) of the sorted sample ids: equal for two caches of the same samples.

        Results record the digest of the cache they were searched on, so a
        validation cache holding the same samples is refused.
        """
        import hashlib

        ids = np.sort(np.asarray(self.sample, dtype="<i8"))
        return hashlib.sha256(ids.tobytes()).hexdigest()[:32]

    def select(self, positions=None, exit_types=None) -> ExitCache:
        """The cache restricted to some early positions and/or exit types (for ablations).

        Parameters
        ----------
        positions, exit_types : sequence of names or indices, optional
            None keeps all. Positions keep depth order whatever order they are
            given in; exit types follow the given order. Unknown names,
            out-of-range indices and duplicates raise CacheError.

        Returns
        -------
        ExitCache
            Cumulative backbone MACs stay measured from the input, and the
            metadata entries (channels, exit type specs, ...) follow the selection.
        """
        pos_idx = (
            np.arange(self.n_positions)
            if positions is None
            else np.sort(self._resolve(positions, self.positions, "position"))
        )
        type_idx = (
            np.arange(self.n_types) if exit_types is None else self._resolve(exit_types, self.exit_types, "exit type")
        )
        md = dict(self.metadata)
        md["positions"] = [md["positions"][p] for p in pos_idx]
        md["exit_types"] = [md["exit_types"][k] for k in type_idx]
        grid = np.ix_(pos_idx, type_idx)
        return replace(
            self,
            pred=np.ascontiguousarray(self.pred[grid]),
            conf=np.ascontiguousarray(self.conf[grid]),
            backbone_macs=self.backbone_macs[pos_idx],
            exit_macs=self.exit_macs[grid],
            available=self.available[grid],
            positions=tuple(self.positions[p] for p in pos_idx),
            exit_types=tuple(self.exit_types[k] for k in type_idx),
            metadata=md,
        )

    def position_index(self, position) -> int:
        """Index of an early position given by index or name; CacheError naming the known ones otherwise."""
        return _index_of(position, self.positions, "position")

    def exit_type_index(self, exit_type) -> int:
        """Index of an exit type given by index or name; CacheError naming the known ones otherwise."""
        return _index_of(exit_type, self.exit_types, "exit type")

    @staticmethod
    def _resolve(items, names: tuple, what: str) -> np.ndarray:
        if isinstance(items, (str, int, np.integer)):
            items = [items]
        out = [_index_of(item, names, what) for item in items]
        if len(set(out)) != len(out):
            raise CacheError(f"duplicate {what} in selection {list(items)!r}")
        if not out:
            raise CacheError(f"selection keeps no {what}")
        return np.array(out, dtype=np.intp)

    # -------------------------------------------------------------------- I/O

    @classmethod
    def read(cls, path) -> ExitCache:
        """Read and validate a cache written by :meth:`write` (docs/cache-format.md).

        Raises
        ------
        CacheError
            If the file is missing, not Parquet, truncated, lacks valid ``dyce``
            metadata, has missing/extra/mistyped/null columns, or any value
            check fails; the message starts with the path and names the column.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        where = str(path)
        if not path.exists():
            raise CacheError(f"{where}: no such file")
        try:
            # page checksums (written by write()) turn silent bit rot into an error
            with pq.ParquetFile(path, page_checksum_verification=True) as pf:
                # metadata and column checks need only the footer: fail before reading the data
                md, available = cls._check_layout(pf.schema_arrow, where)
                table = pf.read(use_threads=True)
        except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
            # UnicodeDecodeError: a corrupt byte in a footer string (a column name, a metadata key)
            raise CacheError(f"{where}: not a readable Parquet file ({exc})") from None
        return cls._from_table(table, md, available, where)

    @staticmethod
    def read_metadata(path) -> dict:
        """The validated ``dyce`` metadata of a cache file, reading its footer only.

        Raises
        ------
        CacheError
            As :meth:`read`, for everything the footer decides (format,
            version, checksum, metadata structure, columns).
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        where = str(path)
        if not path.exists():
            raise CacheError(f"{where}: no such file")
        try:
            with pq.ParquetFile(path) as pf:
                md, _available = ExitCache._check_layout(pf.schema_arrow, where)
        except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
            raise CacheError(f"{where}: not a readable Parquet file ({exc})") from None
        return md

    @classmethod
    def from_arrow(cls, table) -> ExitCache:
        """Build a cache from a ``pyarrow.Table`` laid out as in docs/cache-format.md (the inverse of :meth:`to_arrow`).

        Raises
        ------
        CacheError
            As :meth:`read`, with messages starting with ``arrow table``.
        """
        where = "arrow table"
        md, available = cls._check_layout(table.schema, where)
        return cls._from_table(table, md, available, where)

    @staticmethod
    def _check_layout(arrow_schema, where):
        md = schema.decode_metadata(arrow_schema.metadata, where)
        exit_types = [e["name"] for e in md["exit_types"]]
        available = np.array([[v is not None for v in row] for row in md["exit_macs"]], dtype=bool)
        available = available.reshape(len(md["positions"]), len(exit_types))
        schema.check_columns(arrow_schema, schema.expected_columns(exit_types, available), where)
        return md, available

    @classmethod
    def _from_table(cls, table, md, available, where) -> ExitCache:
        M, (P, K) = table.num_rows, available.shape
        exit_types = tuple(e["name"] for e in md["exit_types"])

        def column(name):
            col = table.column(name)
            if col.null_count:
                raise CacheError(f"{where}: column {name!r} has {col.null_count} null values")
            return col.to_numpy()

        # one [M] copy per exit column into the [P, K, M] blocks; absent exits keep -1 / NaN
        pred = np.full((P, K, M), -1, dtype=np.int32)
        conf = np.full((P, K, M), np.nan, dtype=np.float32)
        for p, k in zip(*np.nonzero(available)):
            pred[p, k] = column(schema.exit_column(int(p), exit_types[k], "pred"))
            conf[p, k] = column(schema.exit_column(int(p), exit_types[k], "conf"))
        try:
            return cls(
                label=column(schema.LABEL),
                pred=pred,
                conf=conf,
                final_pred=column(schema.FINAL_PRED),
                final_conf=column(schema.FINAL_CONF),
                backbone_macs=np.array([e["backbone_macs"] for e in md["positions"]], dtype=np.int64),
                exit_macs=np.array([[v or 0 for v in row] for row in md["exit_macs"]], dtype=np.int64).reshape(P, K),
                available=available,
                total_macs=md["total_macs"],
                positions=tuple(e["name"] for e in md["positions"]),
                exit_types=exit_types,
                sample=column(schema.SAMPLE),
                num_classes=md["num_classes"],
                metadata=md,
            )
        except CacheError as exc:
            raise CacheError(f"{where}: {exc}") from None

    def to_arrow(self):
        """The cache as a ``pyarrow.Table`` with the documented columns and ``dyce`` schema metadata.

        Columns share memory with the cache's arrays where Arrow allows it.
        """
        import pyarrow as pa

        arrays = [
            pa.array(self.sample),
            pa.array(self.label),
            pa.array(self.final_pred),
            pa.array(self.final_conf),
        ]
        for p, k in zip(*np.nonzero(self.available)):
            arrays.append(pa.array(self.pred[p, k]))
            arrays.append(pa.array(self.conf[p, k]))
        columns = schema.expected_columns(self.exit_types, self.available)
        arrow_schema = pa.schema(
            [pa.field(name, typ, nullable=False) for name, typ in columns.items()],
            metadata=schema.encode_metadata(self.metadata),
        )
        return pa.Table.from_arrays(arrays, schema=arrow_schema)

    def write(self, path) -> Path:
        """Write the cache to ``path`` as Parquet, atomically.

        The file is written under a temporary name in the same directory and
        moved over ``path`` with ``os.replace`` once complete, so ``path``
        holds either its previous content or the whole new cache, never a
        partial file; the temporary file is removed if writing fails.

        Returns
        -------
        pathlib.Path
            ``path``.
        """
        import pyarrow.parquet as pq

        path = Path(path)
        table = self.to_arrow()
        # Dictionary encoding pays off for class indices, not for continuous confidences.
        dict_columns = [n for n in table.column_names if n.endswith(".pred") or n == schema.LABEL]
        with atomic_target(path) as tmp, pq.ParquetWriter(
            tmp, table.schema, compression="zstd", use_dictionary=dict_columns, write_page_checksum=True
        ) as writer:
            writer.write_table(table, row_group_size=max(1, table.num_rows))
        return path


def _index_of(value, names: tuple, what: str) -> int:
    """Index of ``value``, an index into ``names`` or one of ``names``."""
    if isinstance(value, str):
        if value not in names:
            raise CacheError(f"unknown {what} {value!r}; the cache has {', '.join(names)}")
        return names.index(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if not 0 <= value < len(names):
            raise CacheError(f"{what} index {value} out of range [0, {len(names)})")
        return int(value)
    raise TypeError(f"a {what} is given by name or index, got {value!r}")
