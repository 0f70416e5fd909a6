"""``python -m extract``: train exits on a frozen classifier and record exit caches.

    python -m extract MODEL --data DATA [--weights NAME|PATH|none] [--splits train val]
                      [--epochs N] [--batch-size B] [--workers W] [--out DIR]
                      [--device cpu|cuda] [--quiet]
    python -m extract MODEL --macs [--json]
    python -m extract digits [--out data/digits]
    python -m extract --config run.toml [MODEL] [more flags]
    torchrun --nproc_per_node G -m extract MODEL --data DATA ...

``--config FILE`` reads a flat TOML table of these options (:mod:`extract.config`);
flags given on the command line win. An extraction writes the options it used
into its run folder as ``config.toml``, which ``--config`` takes back.

Bad input (unknown model, missing data or weights, a checkpoint of another
architecture, a class-count mismatch, an option the mode does not use, a run
directory that cannot be written) ends with one line ``error: ...`` and exit
status 2; Ctrl-C with one line and status 130.
"""

from __future__ import annotations

import argparse
import os
import sys

from dyce_search._io import check_writable
from dyce_search._logging import add_verbosity, setup_logging
from dyce_search.errors import CliParser, DyceError, run_cli

from .config import CONFIG_NAME, ConfigError, dump_toml, load_config
from .errors import ExtractError

def default_workers() -> int:
    """DataLoader workers per process: 4, but no more than the CPUs this process may use.

    More workers than CPUs only make torch warn (once per loader) and compete for the cores.
    """
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, usable))


#: Defaults of options that some mode ignores. The parser leaves them None, so that
#: an option given explicitly can be told from one left out (:func:`_reject_ignored`).
#: The exit types' default belongs to the backbone (``extract.backbones.registry.defaults``).
DEFAULTS = {
    "weights": "default", "splits": ("train", "val"), "train_split": "train",
    "lr": 3e-4, "shard_size": 10_000, "seed": 0,
}

#: Options each mode does not use: given explicitly, they are an error instead of being dropped silently.
IGNORED = {
    "demo": ("--data", "--weights", "--splits", "--train-split", "--exit-types", "--lr", "--workers",
               "--num-classes", "--no-augment", "--shard-size", "--device", "--json", "--hash-data", "--keep-checkpoints"),
    "macs": ("--data", "--weights", "--splits", "--train-split", "--epochs", "--batch-size", "--lr", "--workers",
             "--no-augment", "--shard-size", "--seed", "--out", "--device", "--backbone-epochs", "--hash-data",
             "--keep-checkpoints"),
    "extract": ("--backbone-epochs", "--json"),
}


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(
        prog="python -m extract",
        description=(
            "Attach early exits to a frozen pretrained classifier (DyCE), train them by distillation "
            "and record one exit cache per data split into a run directory. "
            "'digits' runs the embedded demo on scikit-learn's handwritten digits."
        ),
    )
    # optional for argparse, so that a --config file can name it; parse_args requires it from one or the other
    p.add_argument("model", nargs="?", help="backbone name (resnet18/34/50/101/152, convnextv2_*, vit_*/deit_*_patch16_224, "
                   "mobilenetv3_small_100/large_100; docs/backbones.md), or 'digits' for the demo")
    p.add_argument("--config", metavar="FILE",
                   help="TOML file of options (keys: the long option names, e.g. batch-size = 128, and model); "
                   "flags given here win; a run folder's config.toml repeats that run")
    p.add_argument("--data", help="ImageNet-style folder: DATA/<split>/<class>/<image> (torchvision ImageFolder)")
    p.add_argument(
        "--weights",
        help="'default' (the library's pretrained weights), a torchvision weights name / timm tag, "
        "a local .pt/.pth checkpoint, or 'none' for random weights (default: default)",
    )
    p.add_argument("--splits", nargs="+", help="splits to record (default: train val)")
    p.add_argument("--train-split", help="split the exits are trained on (default: train)")
    p.add_argument("--exit-types",
                   help="'paper' (mlp1, mlp3x500, mlp3x1000, mlp5x500, mlp5x1000) or a comma list like mlp1,mlp2x64 "
                   "(default: paper; digits: the demo's exits); a '-token' suffix (mlp1-token) makes exits on "
                   "transformer tokens read the class token instead of the patch-token mean")
    p.add_argument("--epochs", type=int, default=None, help="exit-training epochs (default: 5; digits: 60)")
    p.add_argument("--batch-size", type=int, default=None, help="per-process batch size (default: 64)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default: 3e-4, paper)")
    p.add_argument("--workers", type=int,
                   help="DataLoader workers per process (default: 4, or fewer on a machine with fewer CPUs)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classes of the model (default: 1000 for pretrained weights, else the class folders found)")
    p.add_argument("--no-augment", action="store_true", help="train the exits on eval-transformed images")
    p.add_argument("--shard-size", type=int, help="samples per resumable recording shard (default: 10000)")
    p.add_argument("--hash-data", action="store_true",
                   help="identify each data split by the bytes of its files (reads them once more) instead of by "
                   "their names and sizes; the digest goes into run.json and every cache's provenance record")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep OUT/checkpoints/ (exit-training state, used to resume) once exits.pt is written")
    p.add_argument("--seed", type=int, help="seed of the exits' initialisation and shuffling (default: 0)")
    p.add_argument("--out", help="run directory (default: runs/MODEL; digits: data/digits)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (one that registers a backbone with extract.register_backbone)")
    p.add_argument("--macs", action="store_true", help="print the per-position MACs table and exit (no data needed)")
    p.add_argument("--json", action="store_true", help="with --macs: print JSON instead of a table")
    p.add_argument("--backbone-epochs", type=int, default=None, help="digits only: epochs to train the backbone (default: 30)")
    add_verbosity(p, quiet="no progress bars and no status lines")
    return p


#: Options a config file may not set: they are about this invocation, not the run.
NOT_IN_FILE = ("help", "version", "config")
#: Options left out of the effective config written into a run folder: how the run talks, not what it does.
NOT_RECORDED = (*NOT_IN_FILE, "verbose", "quiet", "macs", "json")


def config_key(action: argparse.Action) -> str:
    """The config-file key of an option: its long name without ``--`` (``batch-size``, ``import``), or the positional's name."""
    longs = [o[2:] for o in action.option_strings if o.startswith("--")]
    return longs[0] if longs else action.dest


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` on top of the ``--config`` file's values (flags win); a bad file is one ``error:`` line."""
    parser = build_parser()
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--config")
    given, _ = first.parse_known_args(argv)
    from_file: dict = {}
    if given.config is not None:
        try:
            from_file = load_config(given.config, parser, key=config_key, skip=NOT_IN_FILE)
        except ConfigError as exc:
            parser.error(str(exc))
        parser.set_defaults(**from_file)
    args = parser.parse_args(argv)
    if args.model is None:
        parser.error("the following arguments are required: model (or model = \"...\" in the --config file)")
    args.from_config = tuple(from_file)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args)
    try:
        # OSError: e.g. a pretrained-weights download without network, an unreadable image, a full disk
        return run_cli(_run, args, errors=(DyceError, OSError),
                       interrupted="interrupted; rerun the same command to resume")
    finally:
        _shutdown_distributed()


def _progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def _mode(args, known) -> str:
    """``macs`` with --macs; ``demo`` for a backbone that brings its own run (the digits); else ``extract``."""
    return "macs" if args.macs else "demo" if known.demo is not None else "extract"


def _reject_ignored(args, known) -> None:
    """Raise ExtractError naming every option given explicitly that the mode of ``args`` does not use."""
    mode = _mode(args, known)
    values = {flag: getattr(args, flag[2:].replace("-", "_")) for flag in IGNORED[mode]}
    given = [flag for flag, value in values.items() if value is not None and value is not False]
    if given:
        in_file = [flag for flag in given if flag[2:].replace("-", "_") in getattr(args, "from_config", ())]
        if in_file:
            given = [f"{flag} (in {args.config})" if flag in in_file else flag for flag in given]
        what = {"demo": f"the {args.model} demo", "macs": "--macs (shapes only)", "extract": f"extracting {args.model}"}[mode]
        raise ExtractError(f"{what} does not use {', '.join(given)}; drop {'it' if len(given) == 1 else 'them'}")


def _check_numbers(args) -> None:
    for flag, value, low in (
        ("--epochs", args.epochs, 1), ("--batch-size", args.batch_size, 1), ("--workers", args.workers, 0),
        ("--shard-size", args.shard_size, 1), ("--backbone-epochs", args.backbone_epochs, 1),
        ("--num-classes", args.num_classes, 1),
    ):
        if value is not None and value < low:
            raise ExtractError(f"{flag} must be at least {low}, got {value}")
    if not args.lr > 0:
        raise ExtractError(f"--lr must be positive, got {args.lr}")


def _run(args) -> int:
    import importlib

    for module in args.imports:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ExtractError(f"--import {module}: {exc}") from exc
    from .backbones.registry import defaults

    # What differs between backbones (classes, exit types, run directory, a demo) comes from the registry.
    known = defaults(args.model)
    _reject_ignored(args, known)
    for dest, value in DEFAULTS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, value)
    if args.workers is None:  # depends on the machine, so not a DEFAULTS entry
        args.workers = default_workers()
    args.exit_types = args.exit_types or known.exit_types
    args.out = args.out or known.out or os.path.join("runs", args.model)
    _check_numbers(args)
    return {"macs": _print_macs, "demo": _demo, "extract": _extract}[_mode(args, known)](args, known)


def effective_config(args) -> dict:
    """``{config key: value}`` of every option of an extraction (as :func:`parse_args` left ``args``, defaults resolved)."""
    ignored = set(IGNORED["extract"])
    values = {}
    for action in build_parser()._actions:
        if action.dest in NOT_RECORDED or f"--{config_key(action)}" in ignored:
            continue
        value = getattr(args, action.dest)
        values[config_key(action)] = list(value) if isinstance(value, tuple) else value
    return values


def write_effective_config(args, path: str) -> None:
    """Write :func:`effective_config` as TOML, atomically; ``python -m extract --config PATH`` repeats the run."""
    from dyce_search._io import write_text_atomic

    header = (f"The options of this run (defaults resolved). Repeat it with\n"
              f"  python -m extract --config {path}\n"
              "Flags given on the command line win over these values.")
    write_text_atomic(path, dump_toml(effective_config(args), header=header))


def _print_macs(args, known) -> int:
    from .backbones import build_backbone
    from .exits import parse_exit_types
    from .macs import macs_table

    # shapes only: the meta device skips allocation and initialisation
    backbone = build_backbone(
        args.model, None, num_classes=args.num_classes or known.num_classes, device="meta"
    )
    table = macs_table(backbone, parse_exit_types(args.exit_types))
    print(table.to_json() if args.json else table.to_text())
    return 0


def _demo(args, known) -> int:
    check_writable(args.out, option="--out", folder=True)
    known.demo(
        args.out,
        exit_epochs=args.epochs,
        backbone_epochs=args.backbone_epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=_progress(args.quiet),
    )
    return 0


def _setup_distributed(device_arg: str | None) -> str:
    """Join the torchrun process group when launched by it; return this process's device."""
    import torch

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if device_arg is None:
        device_arg = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device_arg)
    except RuntimeError as exc:
        raise ExtractError(f"--device {device_arg}: not a device ({exc}); use cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ExtractError(f"--device {device_arg}: no CUDA device is available here; use --device cpu")
    if world_size <= 1:
        return device_arg
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_arg.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        device_arg = f"cuda:{local_rank}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_arg.startswith("cuda") else "gloo")
    return device_arg


def _shutdown_distributed() -> None:
    try:
        import torch.distributed as dist
    except ImportError:
        return
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _extract(args, known) -> int:
    from .backbones import build_backbone, eval_transform, train_transform
    from .backbones.checkpoint import looks_like_path
    from .data import image_folder
    from .fingerprint import describe_transform
    from .exits import parse_exit_types
    from .pipeline import Settings, run_pipeline, seeded_bank
    from .rundir import RunDir, RunInfo

    if not args.data:
        raise ExtractError(
            "--data DIR is required: an ImageNet-style folder with DIR/train/<class>/*.JPEG and DIR/val/<class>/*.JPEG "
            "(or use --macs to count MACs without data, or 'digits' for the offline demo)"
        )
    exit_types = parse_exit_types(args.exit_types)
    weights = None if args.weights.strip().lower() in ("none", "random", "") else args.weights
    if weights is not None and looks_like_path(weights) and not os.path.isfile(weights):
        raise ExtractError(f"--weights {weights}: no such checkpoint file")
    out = args.out
    check_writable(out, option="--out", folder=True)
    device = _setup_distributed(args.device)
    from .data import world

    rank, _ = world()
    run = RunDir(out)

    eval_tf = eval_transform(args.model, weights)
    # built even when the exits exist: run.json's training record names it, and a rerun compares that record
    train_tf = train_transform(args.model, weights, augment=not args.no_augment)
    splits = {s: image_folder(args.data, s, eval_tf) for s in args.splits}
    classes = {s: len(d.classes) for s, d in splits.items()}
    if len(set(classes.values())) > 1:
        raise ExtractError(f"splits of {args.data!r} have different class counts: {classes}")
    found = next(iter(classes.values()))
    num_classes = args.num_classes or (known.num_classes if weights is not None and not looks_like_path(weights) else found)
    import torch

    # random weights must be the same on every DDP rank (and reproducible from the seed)
    torch.manual_seed(args.seed)
    try:
        backbone = build_backbone(args.model, weights, num_classes=num_classes)
    except OSError as exc:  # a download without network, a hub cache we cannot write
        raise ExtractError(
            f"cannot get weights {weights!r} for {args.model} ({exc}); without network access pass "
            "--weights PATH to a local checkpoint, or --weights none for random weights"
        ) from exc
    if backbone.num_classes != found:
        raise ExtractError(
            f"{args.model} with weights {weights or 'none'} has {backbone.num_classes} classes, but {args.data!r} "
            f"has {found} class folders; the caches need the model's own classes"
        )
    train_data = None
    if not run.exits.is_file():
        train_data = image_folder(args.data, args.train_split, train_tf)
        if len(train_data.classes) != found:
            raise ExtractError(
                f"split {args.train_split!r} of {args.data!r} has {len(train_data.classes)} class folders, the others {found}"
            )
    settings = Settings(
        epochs=args.epochs if args.epochs is not None else 5,
        batch_size=args.batch_size or 64,
        lr=args.lr,
        workers=args.workers,
        seed=args.seed,
        device=device,
        shard_size=args.shard_size,
        progress=_progress(args.quiet),
        hash_data=args.hash_data,
        keep_checkpoints=args.keep_checkpoints,
    )
    bank = seeded_bank(backbone, exit_types, args.seed)
    info = RunInfo(
        backbone=args.model,
        weights=weights if weights is None or not looks_like_path(weights) else os.path.abspath(weights),
        num_classes=backbone.num_classes,
        input_size=backbone.input_size,
        positions=[p.to_dict() for p in backbone.positions],
        exits=bank.spec(),
        dataset=os.path.abspath(args.data),
        splits=tuple(args.splits),
        seed=args.seed,
        # random weights cannot be rebuilt from the name; local files are copied so the run stands alone
        backbone_file=weights is None or looks_like_path(weights),
        backbone_module=args.imports[-1] if args.imports else None,
        training={
            "epochs": settings.epochs, "batch_size": settings.batch_size, "lr": settings.lr,
            "split": args.train_split, "augment": not args.no_augment, "transform": describe_transform(train_tf),
            "loss": "soft cross-entropy to the head (Eq. 2-3)",
        },
    )
    written = run_pipeline(out, backbone, bank, train_data=train_data, splits=splits, info=info, settings=settings)
    if rank == 0:
        # what the run used, defaults resolved; written after the pipeline, so a refused rerun leaves the file alone
        args.epochs, args.batch_size, args.device, args.num_classes = (
            settings.epochs, settings.batch_size, device, backbone.num_classes)
        args.data, args.out = os.path.abspath(args.data), os.path.abspath(out)
        if weights is not None and looks_like_path(weights):
            args.weights = os.path.abspath(weights)
        write_effective_config(args, os.path.join(args.out, CONFIG_NAME))
    if rank == 0 and not args.quiet:
        for split, path in written.items():
            print(path)
    return 0
