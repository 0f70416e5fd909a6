"""pyproject.toml holds version ranges; constraints.txt the exact tested versions.

`pip install dyce[torch]` must keep a torch the user already has (e.g. a CUDA
build), so no requirement is an exact pin; the pins `make install` uses live in
constraints.txt and must lie inside those ranges.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")
pytest.importorskip("packaging")
from packaging.requirements import Requirement  # noqa: E402
from packaging.utils import canonicalize_name  # noqa: E402
from packaging.version import Version  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for group in project["optional-dependencies"].values():
        reqs += [Requirement(r) for r in group]
    return [r for r in reqs if canonicalize_name(r.name) != "dyce"]  # `all` names the other extras


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"constraints.txt: {line!r} is not an exact pin"
        pins[canonicalize_name(req.name)] = Version(specs[0].version)
    return pins


def test_requirements_are_ranges_not_pins():
    for req in _requirements():
        ops = {s.operator for s in req.specifier}
        assert not ops & {"==", "==="}, f"{req} pins an exact version; pins belong in constraints.txt"
    by_name = {canonicalize_name(r.name): r for r in _requirements()}
    for name in ("torch", "torchvision"):
        assert any(s.operator == ">=" for s in by_name[name].specifier), f"{by_name[name]} has no lower bound"


def test_constraints_pin_every_requirement_inside_its_range():
    pins = _pins()
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is required but not pinned in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {name}=={pins[name]}, outside the required {req}"


def test_installed_versions_satisfy_the_ranges():
    for req in _requirements():
        try:
            version = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an extra that is not installed
        # a local build tag (2.14.1+cu130) still counts as that release
        assert req.specifier.contains(Version(version).public, prereleases=True), \
            f"installed {req.name} {version} is outside the required {req}"


def test_make_install_uses_the_constraints():
    makefile = (ROOT / "Makefile").read_text()
    rule = re.search(r"^\$\(STAMP\):(.*)\n((?:\t.*\n)+)", makefile, re.M)
    assert rule, "no $(STAMP) rule in the Makefile"
    assert "constraints.txt" in rule.group(1).split(), "$(STAMP) must be rebuilt when constraints.txt changes"
    assert re.search(r"pip install .*-c constraints\.txt", rule.group(2)), "make install must use -c constraints.txt"


def test_readme_names_the_tested_torch_versions():
    pins = _pins()
    readme = (ROOT / "README.md").read_text()
    for name in ("torch", "torchvision"):
        assert f"{name} {pins[name]}" in readme, f"README does not name the tested {name} {pins[name]}"
