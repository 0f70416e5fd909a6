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
