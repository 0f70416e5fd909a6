"""The public surface of the three packages: names resolve, heavy imports stay lazy."""

import inspect
import subprocess
import sys

import pytest

import dyce_search


@pytest.mark.parametrize("name", dyce_search.__all__)
def test_every_public_dyce_search_name_resolves(name):
    assert getattr(dyce_search, name) is not None


def test_public_functions_are_not_shadowed_by_submodules():
    # Importing a submodule binds it on the package; no public function may share its name.
    import dyce_search.evaluation
    import dyce_search.search  # noqa: F401

    for name in ("evaluate", "simulate", "run", "load_result", "minimize_threshold"):
        assert inspect.isfunction(getattr(dyce_search, name)), name


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        dyce_search.no_such_name  # noqa: B018


def test_search_side_never_imports_torch():
    code = (
        "import sys, pkgutil, importlib, dyce_search\n"
        "for m in pkgutil.walk_packages(dyce_search.__path__, 'dyce_search.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "assert 'torch' not in sys.modules, 'dyce_search imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_package_imports_are_cheap():
    code = (
        "import sys, dyce_search, extract, analysis\n"
        "heavy = [m for m in ('torch', 'numba', 'matplotlib', 'pandas') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
