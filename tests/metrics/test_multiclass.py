"""Known answers for multi-class accuracy and the base-to-new summary (CoOp's protocol)."""

from __future__ import annotations

import pytest

from visec.errors import MetricError
from visec.metrics import base_new_summary, harmonic_mean, topk_accuracy, wilson_interval


@pytest.mark.parametrize("b,n,h", [(82.69, 63.22, 71.66), (80.73, 73.60, 77.00), (69.34, 74.22, 71.70)])
def test_harmonic_mean_known_answers(b, n, h):
    """The published averages (CoOp, KgCoOp, zero-shot CLIP) and their H."""
    assert round(harmonic_mean(b, n), 2) == h


def test_harmonic_mean_edges():
    assert harmonic_mean(0, 0) == 0 and harmonic_mean(1, 0) == 0 and harmonic_mean(0.5, 0.5) == 0.5
    with pytest.raises(MetricError):
        harmonic_mean(-1, 0.5)


def test_average_row_takes_h_of_the_means_not_the_mean_of_h():
    s = base_new_summary([0.9, 0.5], [0.1, 0.5])
    assert s["base"] == pytest.approx(0.7) and s["new"] == pytest.approx(0.3)
    assert s["hm"] == pytest.approx(2 * 0.7 * 0.3 / 1.0)  # 0.42, while the mean of the two H is 0.34
    assert s["base_sd"] == pytest.approx(0.28284271, abs=1e-8) and s["n"] == 2
    assert base_new_summary([0.5], [0.25])["base_sd"] == 0.0
    with pytest.raises(MetricError):
        base_new_summary([0.5], [])


def test_top1_accuracy_and_its_wilson_interval():
    m = topk_accuracy([0, 1, 2, 2], [0, 1, 1, 2])
    assert m["acc"]["value"] == 0.75 and m["n"] == 4
    lo, hi = m["acc"]["ci"]
    assert lo == pytest.approx(0.3006418, abs=1e-6) and hi == pytest.approx(0.9544127, abs=1e-6)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0 and wilson_interval(0, 0) is None
    with pytest.raises(MetricError):
        topk_accuracy([0, 1], [0])
