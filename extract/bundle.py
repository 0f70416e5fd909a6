"""Deployment bundles: backbone + the exits a result uses + the result, in one safetensors file.

A run directory holds every exit of the bank (the paper's five types at every
position weigh several backbones) and pickled ``.pt`` files. A bundle holds
what :class:`extract.runtime.DyCEModel` runs and nothing else, readable
without pickle:

* tensors ``backbone.<name>`` (the segmented backbone's state dict) and
  ``exits.<name>`` (the state dict of the bank pruned to the used exits);
* the safetensors header's metadata ``dyce-bundle``: a JSON manifest with
  the backbone name and what rebuilds its architecture, the pruned exit
  bank's spec, the search result's JSON document, the provenance record of
  the run it was exported from, the deployed size and ``digests``.

``digests`` holds the digest of the backbone tensors, of the pruned bank
(spec + tensors) and of the rest of the manifest. Loading recomputes all
three and refuses a bundle where one differs: a tensor or a field edited,
or a file that is not whole. (An integrity check, not a signature: whoever
edits the file can recompute them.) The record's ``exits`` digest describes
the whole bank the result was searched with; it was verified against the run
when the bundle was exported and cannot be recomputed from the bundle.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from dyce_search._io import check_header, write_bytes_atomic
from dyce_search.provenance import digest

from .errors import ExtractError

BUNDLE_FORMAT = "dyce-bundle"
BUNDLE_VERSION = 1
#: Key of the manifest in the safetensors header's metadata.
MANIFEST_KEY = "dyce-bundle"
_PARTS = ("backbone", "exits")

__all__ = ["BUNDLE_FORMAT", "export_bundle", "load_bundle", "read_manifest", "spec_size"]


def export_bundle(run_dir, results, out, *, allow_mixed: bool = False) -> dict:
    """Write the bundle of ``run_dir`` and ``results`` to ``out`` (one ``.safetensors`` file, atomically).

    The run and the result are loaded and checked as by
    :meth:`DyCEModel.load <extract.runtime.DyCEModel.load>` (the whole bank's
    digest against the result's provenance record), then pruned to the exits
    the stored configurations use.

    Returns
    -------
    dict
        ``{"path", "file_bytes", "deployed": DyCEModel.deployed_size(),
        "run_exits": spec_size(run's bank)}``.
    """
    from safetensors.torch import save

    from .rundir import RunDir, RunInfo
    from .runtime import DyCEModel

    model = DyCEModel.load(run_dir, results, allow_mixed=allow_mixed)
    info = RunInfo.load(RunDir(run_dir).run_json)
    tensors = {}
    for part in _PARTS:
        for name, value in getattr(model, part).state_dict().items():
            # safetensors refuses tensors sharing memory; a copy per entry keeps each one whole
            tensors[f"{part}.{name}"] = value.detach().to("cpu").contiguous().clone()
    manifest = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "backbone": {
            "name": info.backbone, "weights": info.weights, "num_classes": info.num_classes,
            "input_size": list(info.input_size), "positions": info.positions, "module": info.backbone_module,
            "preprocess": info.preprocess,
        },
        "exits": model.exits.spec(),
        "provenance": model.provenance,
        "size": model.deployed_size(),
        "result": model.result.to_dict(),
    }
    manifest["digests"] = _digests(manifest, model.backbone, model.exits)
    out = Path(out)
    # bytes through the shared writer: safetensors' own file writer leaves mode 0600 behind
    write_bytes_atomic(out, save(tensors, metadata={MANIFEST_KEY: json.dumps(manifest, allow_nan=False)}))
    return {
        "path": str(out), "file_bytes": out.stat().st_size, "deployed": manifest["size"],
        "run_exits": spec_size(info.exits),
    }


def read_manifest(path) -> dict:
    """The manifest of a bundle (its header only; no tensor is read)."""
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ExtractError(f"bundle {path!r} does not exist")
    try:
        with safe_open(path, framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - safetensors' own errors: one clear message
        raise ExtractError(f"bundle {path!r} is not a readable safetensors file ({exc})") from exc
    if MANIFEST_KEY not in meta:
        raise ExtractError(f"{path!r} is a safetensors file without a {MANIFEST_KEY!r} manifest: not a DyCE bundle")
    try:
        manifest = json.loads(meta[MANIFEST_KEY])
    except json.JSONDecodeError as exc:
        raise ExtractError(f"bundle {path!r}: manifest is not valid JSON ({exc})") from exc
    check_header(manifest, BUNDLE_FORMAT, BUNDLE_VERSION, f"bundle {path!r}", ExtractError)
    return manifest


def load_bundle(path, *, device="cpu"):
    """The :class:`~extract.runtime.DyCEModel` of a bundle, its integrity checked (see the module docstring).

    Raises
    ------
    ExtractError
        Not a bundle, a missing manifest field, or a digest that differs
        (naming ``backbone``, ``exits`` or ``manifest``).
    """
    from safetensors.torch import load_file

    from dyce_search import SearchResult

    from .backbones import build_backbone
    from .exits import ExitBank
    from .rundir import check_positions, import_backbone_module
    from .runtime import DyCEModel, check_result_fits

    path = os.fspath(path)
    manifest = read_manifest(path)
    where = f"bundle {path!r}"
    try:
        spec, arch, result_doc = manifest["backbone"], manifest["exits"], manifest["result"]
        stored, record = dict(manifest["digests"]), manifest["provenance"]
        name, num_classes = str(spec["name"]), int(spec["num_classes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ExtractError(f"{where}: missing or malformed manifest field {exc}") from exc
    tensors = load_file(path, device="cpu")
    states = {part: {} for part in _PARTS}
    for key, value in tensors.items():
        part, _, name_ = key.partition(".")
        if part not in states:
            raise ExtractError(f"{where}: tensor {key!r} belongs to neither the backbone nor the exits")
        states[part][name_] = value
    import_backbone_module(spec.get("module"))
    # random init, then every weight from the bundle (strict): no download, no pickle
    backbone = build_backbone(name, None, num_classes=num_classes)
    backbone.weights = spec.get("weights")
    check_positions(backbone, spec.get("positions") or [], where)
    bank = ExitBank.from_spec(arch)
    for part, module in (("backbone", backbone), ("exits", bank)):
        try:
            module.load_state_dict(states[part], strict=True)
        except RuntimeError as exc:
            raise ExtractError(f"{where}: the {part} tensors do not fit the manifest's architecture ({exc})") from exc
    found = _digests(manifest, backbone, bank)
    differ = [key for key in ("backbone", "exits", "manifest") if stored.get(key) != found[key]]
    if differ:
        raise ExtractError(
            f"{where}: digests of {', '.join(differ)} differ from the manifest's: the bundle was modified or is damaged"
        )
    if isinstance(record, dict) and record.get("backbone") not in (None, found["backbone"]):
        raise ExtractError(f"{where}: the backbone is not the one of the run its provenance record names")
    result = SearchResult.from_dict(result_doc, source=f"{where}, field 'result'")
    check_result_fits(result.metadata, backbone, bank, source=f"{where}, field 'result'", run=where)
    model = DyCEModel(backbone.to(device), bank.to(device), result)
    model.provenance = record
    return model


def spec_size(spec: dict) -> dict:
    """``{"count", "parameters", "bytes"}`` of the exit bank ``spec`` describes, counted without allocating it."""
    from .exits import ExitBank
    from .runtime import module_size

    with torch.device("meta"):  # shapes only: a full bank of a large backbone is gigabytes
        bank = ExitBank.from_spec(spec)
    params, nbytes = module_size(bank)
    return {"count": sum(1 for _ in bank.exits()), "parameters": params, "bytes": nbytes}


def _digests(manifest: dict, backbone, bank) -> dict:
    from .fingerprint import exits_digest, state_digest

    rest = {key: value for key, value in manifest.items() if key != "digests"}
    return {"backbone": state_digest(backbone), "exits": exits_digest(bank), "manifest": digest(rest)}
