"""Run time against simulation: random configurations and the comparison, shared by the run-time tests."""

import numpy as np

from dyce_search import Config
# from the submodule: once it is imported, the package attribute `evaluate` is the module
from dyce_search.evaluation import evaluate, simulate
from extract.macs import count_macs


def quantile_configs(cache, n=12, seed=1):
    """Random configurations whose thresholds are quantiles of the recorded confidences.

    Covers single exits, all positions, both exit types and thresholds equal
    to a recorded confidence (the boundary case of ``>=``).
    """
    rng = np.random.default_rng(seed)
    P, K, _ = cache.conf.shape
    configs = [Config.empty(P)]
    for i in range(n):
        k = rng.integers(-1, K, size=P)
        if i == 0:
            k[:] = 0
        if (k < 0).all():
            k[rng.integers(P)] = rng.integers(K)
        t = np.full(P, np.nan)
        for p in np.flatnonzero(k >= 0):
            conf = cache.conf[p, k[p]].astype(np.float64)
            # every third threshold is exactly a recorded confidence
            t[p] = conf[rng.integers(conf.size)] if i % 3 == 2 else np.quantile(conf, rng.uniform(0.2, 0.95))
        configs.append(Config(k, t))
    return configs


def compare_with_simulation(model, cache, x, configs):
    """Per configuration: (exit-position mismatches, borderline ones, executed MACs, Eq. 11 MACs)."""
    rows = []
    P = cache.n_positions
    for i, config in enumerate(configs):
        model.use(i)
        outputs = []
        # one pass: the MACs flop_counter sees are those of the run compared below
        executed = count_macs(lambda inp: outputs.append(model(inp)), x, mode="real")
        logits, position = outputs[0]
        position, pred = position.numpy(), logits.argmax(1).numpy()
        sim = simulate(cache, config)
        differ = (position != sim.position) | (pred != sim.pred)
        borderline = 0
        for m in np.flatnonzero(differ):
            first = min(int(position[m]), int(sim.position[m]))
            if first < P:  # decisions differ at the first exit where one side left
                c = float(cache.conf[first, config.exit_types[first], m])
                borderline += abs(c - config.thresholds[first]) <= 4 * np.spacing(np.float32(c))
        predicted = evaluate(cache, config).rel_cost * cache.total_macs * cache.n_samples
        rows.append((int(differ.sum()), int(borderline), executed, predicted))
    return rows
