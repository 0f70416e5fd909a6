"""The conservative objective of the authors' released code: every exit group's accuracy at its Beta lower bound.

With ``conservative=alpha``, the accuracy of the samples leaving at each
position (and at the head) is replaced by ``betaincinv(1 + correct, 1 +
wrong, alpha)`` (:func:`dyce_search.stats.beta_lower_bound`), the alpha
quantile of the posterior of that group's accuracy, so that a group of few
samples counts as less accurate than its observed rate. Eq. 10 becomes

    A_alpha = sum over groups g of E_g * B(EC_g, E_g - EC_g) / (M A_ori)

and f (Eq. 12) uses A_alpha in place of A. This is a heuristic pessimism
with no frequentist guarantee (compare :func:`dyce_search.select`, which
certifies a drop on unseen data); it is offered because the authors' code
offers it, for the searches it was made for: the paper's single-pass and
iterative searches with the paper's bounded minimiser. f is no longer
affine in two counts, so the exact threshold scans (and the descent built on
them) cannot use it; a search evaluates f(t) from the group counts of the
candidate configuration (an O(M) pass) inside scipy's bounded minimiser.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True)
def _group_counts(e, c1, n_groups):
    """int64 [G] samples and correct predictions per exit position (head last) of a state."""
    exits = np.zeros(n_groups, np.int64)
    correct = np.zeros(n_groups, np.int64)
    for m in range(e.shape[0]):
        exits[e[m]] += 1
        correct[e[m]] += c1[m]
    return exits, correct


@njit(cache=True)
def _candidate_counts(p, conf_col, pred_col, truth, t, code, e, c1, n_groups):
    """Group counts when exit (p, .) with threshold t replaces position p's choice.

    ``code`` holds the continuation of the samples reaching p
    (:func:`~dyce_search._kernels.state.pack_continuation`); the others keep
    their exit ``e``.
    """
    sentinel = 2 * n_groups
    exits = np.zeros(n_groups, np.int64)
    correct = np.zeros(n_groups, np.int64)
    for m in range(e.shape[0]):
        c = code[m]
        if c >= sentinel:
            g = e[m]
            ok = c1[m]
        elif np.float64(conf_col[m]) >= t:
            g = p
            ok = 1 if pred_col[m] == truth[m] else 0
        else:
            g = c >> 1
            ok = c & 1
        exits[g] += 1
        correct[g] += ok
    return exits, correct


def conservative_correct(exits, correct, alpha) -> float:
    """sum over groups of E_g * betaincinv(1 + EC_g, 1 + E_g - EC_g, alpha): M A_alpha A_ori."""
    from .stats import beta_lower_bound

    exits = np.asarray(exits, dtype=np.int64)
    correct = np.asarray(correct, dtype=np.int64)
    used = exits > 0
    if not used.any():
        return 0.0
    lower = beta_lower_bound(correct[used], exits[used] - correct[used], alpha)
    return float(np.dot(exits[used].astype(np.float64), np.atleast_1d(lower)))


def check_alpha(alpha) -> float:
    """``alpha`` as a float in (0, 1); ValueError naming the ``conservative`` option otherwise."""
    from .stats import check_open_unit

    return check_open_unit(alpha, "conservative")


class _Searcher:
    """The paper's single-pass and iterative searches with bounded minimisation of the conservative f."""

    def __init__(self, problem, allowed, alpha):
        self.problem = problem
        self.allowed = allowed
        self.alpha = alpha
        self.P = problem.shape[0]

    def _value(self, lam, exits, correct, cost_sum):
        a0, a_correct, a_cost_q = self.problem.coefficients(lam)
        n_alpha = conservative_correct(exits, correct, self.alpha)
        return a0 + a_correct * n_alpha + a_cost_q * float(cost_sum)

    def current(self, lam, state):
        e, _, c1, _, _, _, cost_sum = state
        exits, correct = _group_counts(e, c1, self.P + 1)
        return self._value(lam, exits, correct, cost_sum)

    def minimise(self, lam, state, k_cfg, p, k):
        """(t, f) of scipy's bounded minimiser on the conservative f at (p, k); (nan, inf) if nobody reaches p."""
        from scipy.optimize import minimize_scalar

        from ._kernels.state import pack_continuation, saved_costs
        from ._kernels.thresholds import value_at_threshold

        prob = self.problem
        e, e2, c1, c2, cum, _, _ = state
        code = np.empty(e.shape[0], np.int16)
        n_reach, n_correct0, cost_sum0 = pack_continuation(p, e, e2, c1, c2, cum, int(k_cfg[p]), prob.exit_q, code)
        if n_reach == 0:
            return math.nan, math.inf
        saved = saved_costs(cum, p)
        cost_base = cost_sum0 + n_reach * prob.exit_q[p, k]
        conf_col, pred_col = prob.conf[p, k], prob.pred[p, k]

        def f(t):
            _, cost_sum = value_at_threshold(conf_col, pred_col, prob.truth, float(t), code, saved, n_correct0,
                                             cost_base)
            exits, correct = _candidate_counts(p, conf_col, pred_col, prob.truth, float(t), code, e, c1, self.P + 1)
            return self._value(lam, exits, correct, cost_sum)

        res = minimize_scalar(f, bounds=(0.0, 1.0), method="bounded")
        return float(res.x), float(res.fun)

    def single_pass(self, lam):
        prob, P = self.problem, self.P
        k_cfg = np.full(P, -1, np.int64)
        t_cfg = np.full(P, np.nan)
        state = prob.state(k_cfg, t_cfg)
        f_min = self.current(lam, state)
        for p in range(P):
            if not self.allowed[p].any():
                continue
            choice = None
            for k in np.flatnonzero(self.allowed[p]):
                t, f = self.minimise(lam, state, k_cfg, p, int(k))
                if f < f_min:
                    f_min, choice = f, (int(k), t)
            if choice is not None:
                k_cfg[p], t_cfg[p] = choice
                state = prob.state(k_cfg, t_cfg)
        return k_cfg, t_cfg

    def iterative(self, lam, max_rounds):
        prob, P = self.problem, self.P
        k_cfg = np.full(P, -1, np.int64)
        t_cfg = np.full(P, np.nan)
        state = prob.state(k_cfg, t_cfg)
        f_cur = self.current(lam, state)
        rounds = 0
        while max_rounds is None or rounds < max_rounds:
            best, choice = f_cur, None
            for p in range(P):
                if not self.allowed[p].any():
                    continue
                if k_cfg[p] >= 0:
                    k2 = k_cfg.copy()
                    t2 = t_cfg.copy()
                    k2[p], t2[p] = -1, np.nan
                    f = self.current(lam, prob.state(k2, t2))
                    if f < best:
                        best, choice = f, (p, -1, math.nan)
                for k in np.flatnonzero(self.allowed[p]):
                    t, f = self.minimise(lam, state, k_cfg, p, int(k))
                    if f < best:
                        best, choice = f, (p, int(k), t)
            if choice is None:
                break
            p, k, t = choice
            k_cfg[p], t_cfg[p] = k, t
            state = prob.state(k_cfg, t_cfg)
            f_cur = self.current(lam, state)
            rounds += 1
        return k_cfg, t_cfg


def search(problem, allowed, lambdas, method, alpha, max_rounds=None, bar=None):
    """k [L, P], t [L, P], seconds [L] of ``method`` (``single_pass`` or ``iterative``) on the conservative f."""
    import time

    searcher = _Searcher(problem, allowed, alpha)
    P, L = problem.shape[0], len(lambdas)
    k_out = np.empty((L, P), np.int64)
    t_out = np.empty((L, P), np.float64)
    seconds = np.empty(L)
    for j, lam in enumerate(lambdas):
        t0 = time.perf_counter()
        if method == "single_pass":
            k_out[j], t_out[j] = searcher.single_pass(float(lam))
        else:
            k_out[j], t_out[j] = searcher.iterative(float(lam), max_rounds)
        seconds[j] = time.perf_counter() - t0
        if bar is not None:
            bar.update(1)
    return k_out, t_out, seconds


__all__ = ["conservative_correct", "check_alpha", "search"]
