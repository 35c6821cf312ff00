"""The example plugin in examples/ loads by file path and follows the contract."""

from pathlib import Path

import numpy as np

from benchmark.audiogram import listeners_from_names
from benchmark.calibration import calibrate
from processors import registry
from processors.base import Presentation

PLUGIN = str(Path(__file__).resolve().parents[2] / "examples" / "tilt_eq.py") + ":TiltEQ"


def test_example_plugin_loads_with_params_and_applies_gain():
    x = (np.random.default_rng(0).standard_normal((2, 24000)) * 0.05).astype(np.float32)
    listener = listeners_from_names(["NH"])[0]  # 0 dB HL: no shelf, only the broadband gain
    presentation = Presentation(24000, listener, calibrate(x, 65))
    names = [PLUGIN]
    params = registry.parse_params([f"{PLUGIN}.gain_db=12"], names)
    proc = registry.create(PLUGIN, params[PLUGIN])
    assert proc.gain_db == 12.0 and proc.label == "tilt-eq(gain_db=12.0)"
    y = proc.process(x, presentation, rng=np.random.default_rng(0))
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, x * 10 ** (12 / 20), rtol=1e-5)
