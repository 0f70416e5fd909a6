"""Fig. 3: the threshold axis fitted to where an exit's confidences are, and the tail's sample counts."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from analysis import curves
from analysis.displays import ThresholdCurveDisplay
from dyce_search import ExitCache


def one_exit_cache(conf, correct) -> ExitCache:
    """One early position with one exit; sample i has confidence conf[i], right iff correct[i]; 3 classes."""
    conf = np.asarray(conf, dtype=np.float64)
    M = conf.size
    label = np.arange(M) % 3
    pred = np.where(correct, label, (label + 1) % 3)
    return ExitCache(
        label=label, pred=pred[None, None], conf=conf[None, None], final_pred=label, final_conf=np.ones(M),
        backbone_macs=np.array([10]), exit_macs=np.array([[1]]), available=np.array([[True]]), total_macs=100,
        positions=("layer1.0",), exit_types=("mlp",), sample=np.arange(M), num_classes=3,
        metadata={"backbone": "toy", "dataset": "toyset"},
    )


@pytest.fixture(scope="module")
def clustered():
    """1,000 confidences evenly in (0.8, 1), 0.8001 ... 0.9999: the first 990 samples are right, the 10 most
    confident wrong."""
    conf = 0.8 + 0.2 * (np.arange(1000) + 0.5) / 1000
    return one_exit_cache(conf, np.arange(1000) < 990)


def test_confidence_range_hand_values():
    cache = one_exit_cache([0.2, 0.5, 0.9, 0.7], [False, True, True, False])
    # 1 % quantile of .2 .5 .7 .9 is 0.209, rounded down to 0.20; the right end is the largest confidence
    assert curves.confidence_range(cache) == (pytest.approx(0.2), pytest.approx(0.9))
    assert curves.confidence_range(cache, quantile=0.5) == (pytest.approx(0.6), pytest.approx(0.9))
    # all confidences equal: still a range 0.01 wide ending there
    flat = one_exit_cache([0.6] * 4, [True] * 4)
    assert curves.confidence_range(flat) == (pytest.approx(0.59), pytest.approx(0.6))


def test_default_curve_spans_where_the_confidences_are(clustered):
    f = curves.threshold_curve(clustered)
    # not from 0: every sample has c >= 0.8, the flat part below is left out
    assert f["threshold"].iloc[0] == pytest.approx(0.8) and f["threshold"].iloc[-1] == pytest.approx(0.9999)
    assert len(f) == 201
    assert f["n_exited"].iloc[0] == 1000 and f["n_exited"].iloc[-1] == 1


def test_tail_counts_samples_above_high_thresholds(clustered):
    conf = clustered.conf[0, 0]
    tail = curves.threshold_tail(clustered)
    np.testing.assert_allclose(tail["threshold"], [0.9, 0.99, 0.999])
    assert tail["n_exited"].tolist() == [int((conf >= t).sum()) for t in (0.9, 0.99, 0.999)] == [500, 50, 5]
    assert tail["n_correct"].tolist() == [490, 40, 0]
    # a threshold beyond the largest confidence is not on the axis, so not in the tail
    np.testing.assert_allclose(curves.threshold_tail(one_exit_cache([0.3, 0.95], [True, True]))["threshold"], [0.9])
    np.testing.assert_allclose(curves.tail_thresholds(conf, 0.5, 1.0), [0.9, 0.99, 0.999])
    # no round threshold on the axis (confidences below 0.9): where 1 % and 0.1 % of the samples remain
    shallow = np.arange(1000) / 2000 + 0.0005  # 0.0005 ... 0.4995
    np.testing.assert_allclose(curves.tail_thresholds(shallow, 0.0, shallow.max(), shares=(0.1, 0.01)), [0.45, 0.49])
    tail = curves.threshold_tail(one_exit_cache(shallow, np.ones(1000, bool)))  # default shares 1 %, 0.1 %
    np.testing.assert_allclose(tail["threshold"], [0.49])  # both round down to 0.49: one mark
    assert tail["n_exited"].tolist() == [21]  # 0.4905 ... 0.4995
    np.testing.assert_allclose(curves.tail_thresholds([0.2, 0.3], 0.29, 0.3), [0.3])  # nothing between: the end


def test_display_fits_the_axis_and_labels_the_tail(clustered):
    import matplotlib.pyplot as plt

    d = ThresholdCurveDisplay.from_cache(clustered).plot()
    assert d.ax_.get_xlim() == (pytest.approx(0.8), pytest.approx(0.9999))
    assert sorted(d.tail_lines_) == [0.9, 0.99, 0.999]
    assert d.tail_lines_[0.99].get_xdata()[0] == pytest.approx(0.99)
    legend = [t.get_text() for t in d.ax_.get_legend().get_texts()]
    assert "n = 500 samples with c ≥ 0.9" in legend and "n = 50 samples with c ≥ 0.99" in legend
    assert "n = 5 samples with c ≥ 0.999" in legend
    plt.close(d.figure_)
    bare = ThresholdCurveDisplay.from_cache(clustered).plot(show_tail=False)
    assert bare.tail_lines_ == {} and not any("n =" in t.get_text() for t in bare.ax_.get_legend().get_texts())
    plt.close(bare.figure_)
