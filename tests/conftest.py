import importlib.util
import os

# Plots in tests never need a screen.
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_configure(config):
    # The torch tests run tiny tensors, for which intra-op threading only adds
    # spin-wait overhead (tens of times slower on a loaded 2-core machine).
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(1)


def _hypothesis_profiles():
    # CI must be reproducible: the same examples on every run (a failure found while
    # exploring locally is replayable with the seed hypothesis prints). Locally,
    # examples stay random so each run explores new inputs.
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, print_blob=True)
    if os.environ.get("CI"):
        settings.load_profile("ci")


_hypothesis_profiles()
