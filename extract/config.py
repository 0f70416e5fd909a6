"""Config files for ``python -m extract``: a flat TOML table of its options, in and out.

``--config run.toml`` loads ``key = value`` lines whose keys are the long
option names (``batch-size`` or ``batch_size``) plus ``model``; they become the
parser's defaults, so a flag given on the command line wins over the file, and
an option given in the file counts as given (a mode that does not use it
refuses it, as it refuses the flag). Paths in the file are read as on the
command line (relative to the working directory).

After a run, the effective settings (every option the run used, after the
built-in defaults, the file and the flags) are written into the run folder as
``config.toml`` by :func:`dump_toml`, in the same format: ``python -m extract
--config RUN/config.toml`` repeats the run.

Only torch-free imports here: the parser reads the file before anything heavy
is imported.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import tomllib

#: File name of the effective configuration inside a run folder.
CONFIG_NAME = "config.toml"


class ConfigError(ValueError):
    """A config file cannot be read or holds a key or value the parser does not take; names file, key and value."""


def _kind(action: argparse.Action) -> str:
    """How a value of ``action`` looks in TOML: the table below decides what is accepted."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return "bool"
    if isinstance(action, argparse._AppendAction) or action.nargs in ("+", "*"):
        return "list"
    return {int: "int", float: "float"}.get(action.type, "str")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


#: kind -> (accepts a TOML value, what the message says it must be, converts it to the parser's value)
_KINDS = {
    "bool": (lambda v: isinstance(v, bool), "true or false", lambda v: v),
    "int": (_is_int, "an integer", int),
    "float": (lambda v: _is_int(v) or isinstance(v, float), "a number", float),
    "str": (lambda v: isinstance(v, str), "a string", str),
    "list": (lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v), "a list of strings", list),
}


def options(parser: argparse.ArgumentParser, key, *, skip: tuple[str, ...] = ()) -> dict[str, argparse.Action]:
    """Config key (``key(action)``, ``_`` read as ``-``) -> the parser's action, for every option a file may set.

    ``skip`` names dests a file may not set (``help``, ``version``, ``config`` itself, ...).
    """
    keys = {}
    for action in parser._actions:
        if action.dest in skip or action.dest == argparse.SUPPRESS:
            continue
        keys[key(action).replace("_", "-")] = action
    return keys


def load_config(path: str | os.PathLike, parser: argparse.ArgumentParser, *, key, skip: tuple[str, ...] = ()) -> dict:
    """The parser defaults a config file sets: ``{dest: value}``.

    ``key(action)`` is the file's name of an option (``batch-size`` for
    ``--batch-size``); a key written with ``_`` for ``-`` means the same.

    Raises
    ------
    ConfigError
        The file cannot be read or is not TOML, a key is not an option (the
        message lists the valid ones), a key appears twice (``batch-size`` and
        ``batch_size``), a value is a nested table, or a value has the wrong
        type for its option; the message names the file, the key and the value.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not a TOML file ({exc})") from None
    known = options(parser, key, skip=skip)
    values: dict = {}
    for key, value in doc.items():
        name = key.replace("_", "-")
        action = known.get(name)
        if action is None:
            raise ConfigError(f"{path}: unknown key {key!r} = {value!r}; keys are the options: {', '.join(sorted(known))}")
        if action.dest in values:
            raise ConfigError(f"{path}: key {key!r} is given twice (as {name!r} and with '_')")
        accepts, must, convert = _KINDS[_kind(action)]
        if not accepts(value):
            raise ConfigError(f"{path}: key {key!r} must be {must}, got {value!r}")
        if action.choices is not None and value not in action.choices:
            raise ConfigError(f"{path}: key {key!r} must be one of {list(action.choices)}, got {value!r}")
        values[action.dest] = convert(value)
    return values


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(value, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # shortest text that reads back to the same float; always has '.', 'e' or both
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, key) for v in value) + "]"
    raise TypeError(f"config key {key!r}: cannot write {type(value).__name__} {value!r} as a flat TOML value")


def dump_toml(values: dict, *, header: str = "") -> str:
    """A flat TOML table of ``values`` (bool, int, float, str and lists of them), keys in the given order.

    ``None`` values are left out (TOML has no null: an option left unset is
    absent). ``header`` becomes leading ``#`` comment lines.
    """
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for key, value in values.items():
        if value is None:
            continue
        if not _BARE_KEY.match(key):
            raise TypeError(f"config key {key!r} is not a bare TOML key")
        lines.append(f"{key} = {_toml_value(value, key)}")
    return "\n".join(lines) + "\n"
