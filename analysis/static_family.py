"""torchvision's ResNets as static reference points of Fig. 4: published top-1 accuracy, MACs, parameters.

The paper's Fig. 4 draws the original models of the family (ResNet-18 to
-152) next to DyCE's curves, so a reader sees that a DyCE configuration of
ResNet-50 can, e.g., match ResNet-34's accuracy at fewer MACs. Those points
are torchvision's own numbers, read from its weight enums' metadata (shipped
with the package, no download): ``meta["_metrics"]["ImageNet-1K"]["acc@1"]``
(ImageNet-1K validation top-1, %), ``meta["_ops"]`` and ``meta["num_params"]``.

``_ops`` is documented as GFLOPS, but torchvision counts one multiply-add as
one operation: it equals this package's MACs (convolutions and matrix
products, ``extract.macs``) to the three decimals it gives, e.g. ResNet-50
4.089 vs 4,089,184,256 MACs (``tests/test_analysis_static_family.py`` checks
every plain ResNet against :mod:`dyce_search._resnet_arch`).

analysis never imports torch: the numbers ship as a small CSV next to this
module (:data:`DATA_FILE`), written from torchvision by
``python -m analysis.static_family --update``; ``--check`` (and a test, where
torchvision is installed) compares it with the installed torchvision.

:func:`reference_models` decides from a cache's or result's metadata whether
the numbers compare with its curve (:data:`COMPARABILITY`) and returns the
points to draw.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

#: Every ResNet of torchvision (its ``resnet`` module), by family; each with all its weights tags.
MODELS = {
    "resnet": ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"),
    "resnext": ("resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d"),
    "wide_resnet": ("wide_resnet50_2", "wide_resnet101_2"),
}
#: The family Fig. 4 always shows (the paper's stars); a cache of another family adds its own.
PAPER_FAMILY = "resnet"

#: Where the table ships (package data, see pyproject.toml).
DATA_FILE = Path(__file__).with_name("torchvision_resnets.csv")

#: Columns of the table, with torchvision's own units (no conversion, so the file compares exactly).
COLUMNS = (
    "model",  # torchvision builder name, e.g. resnet50
    "family",  # key of MODELS
    "weights",  # weights enum member, e.g. IMAGENET1K_V2
    "default",  # whether torchvision's DEFAULT alias points to this member
    "top1_percent",  # ImageNet-1K validation top-1 accuracy, %
    "gmacs",  # meta["_ops"]: billions of multiply-accumulates at the weights' input size
    "params",  # meta["num_params"]
    "source",  # where the numbers come from: torchvision version and weights enum
)

#: The dataset torchvision's accuracies are measured on, as the metadata names it.
IMAGENET_1K = "ImageNet-1K"
IMAGENET_CLASSES = 1000
#: Substrings of a cache's ``dataset`` (a name or the data folder's path) that mean ImageNet.
IMAGENET_NAMES = ("imagenet", "ilsvrc")


def from_torchvision(models: Mapping[str, Sequence[str]] = MODELS) -> pd.DataFrame:
    """The table read from the installed torchvision (imported here only)."""
    import torchvision
    from torchvision.models import get_model_weights

    rows = []
    for family, names in models.items():
        for model in names:
            enum = get_model_weights(model)
            for member in enum:
                meta = member.meta
                rows.append({
                    "model": model,
                    "family": family,
                    "weights": member.name,
                    "default": member is enum.DEFAULT,
                    "top1_percent": float(meta["_metrics"][IMAGENET_1K]["acc@1"]),
                    "gmacs": float(meta["_ops"]),
                    "params": int(meta["num_params"]),
                    "source": f"torchvision {torchvision.__version__.split('+')[0]} {enum.__name__}.{member.name}",
                })
    return pd.DataFrame(rows, columns=list(COLUMNS))


def shipped() -> pd.DataFrame:
    """The table shipped with the package (:data:`DATA_FILE`)."""
    table = pd.read_csv(DATA_FILE, dtype={"default": bool, "params": "int64"})
    return table[list(COLUMNS)]


def to_csv(table: pd.DataFrame) -> str:
    """The file's text: one row per model and weights tag, in :data:`MODELS` order."""
    return table[list(COLUMNS)].to_csv(index=False, lineterminator="\n")


def differences(table: pd.DataFrame, reference: pd.DataFrame) -> list[str]:
    """Rows of ``reference`` that ``table`` lacks or states differently (the ``source`` column aside)."""
    key = ["model", "weights"]
    values = [c for c in COLUMNS if c not in (*key, "source")]
    a, b = table.set_index(key), reference.set_index(key)
    out = [f"{m} {w}: missing" for m, w in b.index.difference(a.index)]
    out += [f"{m} {w}: not in torchvision" for m, w in a.index.difference(b.index)]
    for idx in b.index.intersection(a.index):
        for c in values:
            here, there = a.at[idx, c], b.at[idx, c]
            if here != there:
                out.append(f"{idx[0]} {idx[1]}: {c} {here} here, {there} in torchvision")
    return out


# ------------------------------------------------------------ comparability


def _is_imagenet(dataset) -> bool:
    text = str(dataset or "").lower()
    return any(name in text for name in IMAGENET_NAMES)


#: When torchvision's published numbers compare with a curve: (what must hold, why not when it fails).
#: Checked in order on the metadata of a cache or search result; the first failing one is the reason.
COMPARABILITY = (
    (lambda md: not md.get("synthetic"),
     lambda md: "the cache is synthetic (its accuracies are simulated, not measured on ImageNet)"),
    (lambda md: md.get("cost_unit") in (None, "macs"),
     lambda md: f"costs are in {md.get('cost_unit')}, the published models' in MACs"),
    (lambda md: md.get("num_classes") in (None, IMAGENET_CLASSES),
     lambda md: f"{md.get('num_classes')} classes; the published accuracies are on {IMAGENET_1K} "
                f"({IMAGENET_CLASSES} classes)"),
    (lambda md: _is_imagenet(md.get("dataset")),
     lambda md: f"dataset {md.get('dataset')!r} is not {IMAGENET_1K}, on which the published accuracies are measured"),
)


def not_comparable(metadata: Mapping) -> str | None:
    """Why torchvision's published points do not compare with this cache's curve, or None if they do."""
    for holds, reason in COMPARABILITY:
        if not holds(metadata):
            return reason(metadata)
    return None


def weights_tag(table: pd.DataFrame, model, weights) -> str | None:
    """The weights member a cache's ``weights`` entry means for ``model``, or None (a checkpoint, random).

    Accepts a member name (``IMAGENET1K_V2``), the enum-qualified form
    (``ResNet50_Weights.IMAGENET1K_V2``) and ``default``, which means the
    member torchvision's DEFAULT pointed to when the table was written.
    """
    rows = table[table["model"] == model]
    if rows.empty or not weights:
        return None
    spec = str(weights)
    if spec.lower() == "default":
        return str(rows.loc[rows["default"], "weights"].iloc[0])
    tag = spec.rsplit(".", 1)[-1]
    return tag if tag in set(rows["weights"]) else None


def display_name(model: str, weights: str) -> str:
    """``ResNet-50 V2``, ``ResNeXt-101 32x8d V1``, ``Wide ResNet-50-2 V2``: a point's label."""
    version = weights.rsplit("_", 1)[-1]
    if model.startswith("wide_resnet"):
        depth = model[len("wide_resnet"):].replace("_", "-")
        return f"Wide ResNet-{depth} {version}"
    if model.startswith("resnext"):
        depth, width = model[len("resnext"):].split("_", 1)
        return f"ResNeXt-{depth} {width} {version}"
    return f"ResNet-{model[len('resnet'):]} {version}"


def reference_models(metadata: Sequence[Mapping] | Mapping, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """torchvision's published models to draw next to the curves of caches / results with ``metadata``.

    Parameters
    ----------
    metadata : mapping or sequence of mappings
        Metadata of each cache or :class:`~dyce_search.SearchResult` drawn in
        one figure (``backbone``, ``weights``, ``dataset``, ``num_classes``,
        ``synthetic``, ``cost_unit``).
    table : DataFrame, optional
        Default :func:`shipped`.

    Returns
    -------
    DataFrame
        One row per model and weights tag of the :data:`PAPER_FAMILY` and of
        the families of the given backbones: ``model, weights, label,
        accuracy`` (top-1 as a fraction, the figures' unit), ``macs``,
        ``params``, ``used`` (the weights one of the curves ran with: the
        point the curve compresses) and ``source``. Empty when any curve
        does not compare (:func:`not_comparable`); ``attrs["reason"]`` then
        says why, and is None otherwise.
    """
    metadata = [metadata] if isinstance(metadata, Mapping) else list(metadata)
    table = shipped() if table is None else table
    columns = ["model", "weights", "label", "accuracy", "macs", "params", "used", "source"]
    reasons = [r for r in map(not_comparable, metadata) if r]
    if reasons or not metadata:
        frame = pd.DataFrame(columns=columns)
        frame.attrs["reason"] = reasons[0] if reasons else "no curves"
        return frame
    families = {PAPER_FAMILY} | set(table.loc[table["model"].isin([md.get("backbone") for md in metadata]), "family"])
    used = {(md.get("backbone"), weights_tag(table, md.get("backbone"), md.get("weights"))) for md in metadata}
    rows = table[table["family"].isin(families)]
    frame = pd.DataFrame({
        "model": rows["model"],
        "weights": rows["weights"],
        "label": [display_name(m, w) for m, w in zip(rows["model"], rows["weights"])],
        "accuracy": rows["top1_percent"] / 100.0,
        "macs": rows["gmacs"] * 1e9,
        "params": rows["params"],
        "used": [(m, w) in used for m, w in zip(rows["model"], rows["weights"])],
        "source": rows["source"],
    }).reset_index(drop=True)
    frame.attrs["reason"] = None
    return frame


# ---------------------------------------------------------------- command


def main(argv=None) -> int:
    """``python -m analysis.static_family [--update | --check]``: print, rewrite or verify the shipped table."""
    from dyce_search.errors import CliParser

    p = CliParser(prog="python -m analysis.static_family",
                  description="torchvision's ResNets (published top-1, MACs, parameters) shipped for Fig. 4.")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--update", action="store_true", help=f"rewrite {DATA_FILE.name} from the installed torchvision")
    mode.add_argument("--check", action="store_true",
                      help="exit 1 if the shipped table differs from the installed torchvision's metadata")
    args = p.parse_args(argv)
    if args.update:
        from dyce_search._io import write_text_atomic

        write_text_atomic(DATA_FILE, to_csv(from_torchvision()))
        print(f"wrote {DATA_FILE}", file=sys.stderr)
        return 0
    if args.check:
        diff = differences(shipped(), from_torchvision())
        for line in diff:
            print(line)
        return 1 if diff else 0
    print(to_csv(shipped()), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
