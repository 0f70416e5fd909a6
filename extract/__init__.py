"""extract: early exits on a frozen pretrained classifier (PyTorch side of DyCE).

Importing this package is cheap: torch, torchvision and timm are imported only
when a public name that needs them is first used.
"""

from .errors import ExtractError

# public name -> submodule that defines it (imported on first access)
_LAZY = {
    "PositionInfo": "backbones",
    "FeatureLayout": "backbones",
    "SegmentedBackbone": "backbones",
    "build_backbone": "backbones",
    "eval_transform": "backbones",
    "train_transform": "backbones",
    "from_blocks": "backbones",
    "register_backbone": "backbones",
    "SUPPORTED": "backbones",
    "ExitType": "exits",
    "ExitHead": "exits",
    "ExitBank": "exits",
    "PAPER_EXIT_TYPES": "exits",
    "parse_exit_types": "exits",
    "MacsTable": "macs",
    "count_macs": "macs",
    "macs_table": "macs",
    "load_run": "rundir",
    "RunInfo": "rundir",
    "train_exits": "train",
    "record_split": "record",
    "run_pipeline": "pipeline",
    "DyCEModel": "runtime",
    "UnknownConfigError": "runtime",
    "export_bundle": "bundle",
    "load_bundle": "bundle",
    "measure_costs": "latency",
}

__all__ = ["ExtractError", *_LAZY]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'extract' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)


def __dir__():
    return sorted(__all__)
