import math

import numpy as np
import pytest

from benchmark.calibration import calibrate, check_spl, rms
from benchmark.errors import AudioError, BenchError


def test_calibration_presents_the_clean_excerpt_at_the_spl():
    x = np.random.default_rng(0).standard_normal((2, 4800)).astype(np.float32) * 0.05
    cal = calibrate(x, 65.0)
    assert cal.db_spl(x) == pytest.approx(65.0, abs=1e-9)
    assert cal.level1_db_spl == pytest.approx(65.0 - 20 * math.log10(rms(x)))


def test_gain_shows_up_as_level_change():
    x = np.random.default_rng(1).standard_normal((1, 4800)) * 0.1
    cal = calibrate(x, 60.0)
    assert cal.db_spl(2 * x) == pytest.approx(60.0 + 20 * math.log10(2))
    assert cal.digital_rms(60.0) == pytest.approx(rms(x))


def test_silent_excerpt_cannot_be_calibrated():
    with pytest.raises(AudioError, match="silent"):
        calibrate(np.zeros((2, 100)), 65)


@pytest.mark.parametrize("spl", [-5, 10, 130, float("nan")])
def test_out_of_range_spl(spl):
    with pytest.raises(BenchError, match="out of range"):
        check_spl(spl)
