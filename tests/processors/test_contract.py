"""The processor contract, checked for every registered processor.

New processors (built-in or entry points) are picked up automatically from
``processors.registry.available()``; the processing tests also run two chains.
Processors whose optional package is missing are skipped.
"""

import importlib
import pickle

import numpy as np
import pytest

from benchmark.audiogram import Listener, builtin_audiograms
from benchmark.calibration import calibrate
from processors import registry
from processors.base import Presentation, Processor, check_output

RATES_HZ = (24000, 44100)
LAYOUTS = {"mono": ("left",), "stereo": ("left", "right")}


def music_like(n_channels: int, rate: int, duration_s: float = 0.5, seed: int = 0) -> np.ndarray:
    """Harmonic notes with decaying envelopes plus a little noise; shape (n_channels, n)."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * rate)
    t = np.arange(n) / rate
    x = np.zeros((n_channels, n))
    note_s = 0.125
    for k in range(int(np.ceil(duration_s / note_s))):
        f0 = 110.0 * 2 ** (rng.integers(0, 24) / 12)
        seg = (t >= k * note_s) & (t < (k + 1) * note_s)
        env = np.exp(-(t[seg] - k * note_s) * 8.0)
        for h in range(1, 9):
            x[:, seg] += env * np.sin(2 * np.pi * f0 * h * t[seg] + h) / h
    x += 0.01 * rng.standard_normal(x.shape)
    x *= np.linspace(1.0, 0.7, n_channels)[:, None]  # channels differ in level
    return (0.1 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def listener() -> Listener:
    ears = builtin_audiograms()
    return Listener("N2-S2", ears["N2"], ears["S2"])


def case(name: str, rate: int, layout: str, listener: Listener):
    ears = LAYOUTS[layout]
    x = music_like(len(ears), rate)
    presentation = Presentation(rate, listener, calibrate(x, 65.0), ears)
    return registry.create(name), x, presentation


#: Processors that need an optional extra: name -> the module to import.
OPTIONAL = {"rnnoise": "pyrnnoise.rnnoise"}
#: Chains run through the same contract as single processors.
CHAINS = ("spectral-gating>nalr>camfit-wdrc", "mmse-stsa>freq-lowering>nalr-agc")


def _installed(module: str) -> bool:
    try:
        importlib.import_module(module)
    except (ImportError, OSError):
        return False
    return True


def _param(name: str):
    if name in OPTIONAL and not _installed(OPTIONAL[name]):
        return pytest.param(name, marks=pytest.mark.skip(reason=f"optional {OPTIONAL[name]} missing"))
    return name


REGISTERED = pytest.mark.parametrize("name", registry.available())  # creating needs no extra
ALL = pytest.mark.parametrize("name", [_param(n) for n in registry.available()] + list(CHAINS))
RATES = pytest.mark.parametrize("rate", RATES_HZ)
LAYOUT = pytest.mark.parametrize("layout", list(LAYOUTS))


@REGISTERED
def test_is_a_registered_frozen_dataclass_with_defaults(name):
    proc = registry.create(name)
    assert isinstance(proc, Processor)
    assert type(proc).name == name
    assert type(proc).summary
    assert proc.config_id.startswith(name + "-")
    with pytest.raises(AttributeError):  # frozen dataclass: no attribute can be set
        setattr(proc, "probe_attribute", 1)


@ALL
@RATES
@LAYOUT
def test_output_shape_dtype_finite_not_silent(name, rate, layout, listener):
    proc, x, presentation = case(name, rate, layout, listener)
    y = proc.process(x, presentation, rng=np.random.default_rng(0))
    assert isinstance(y, np.ndarray)
    assert y.shape == x.shape
    assert y.dtype == np.float32
    assert np.all(np.isfinite(y))
    assert np.any(y != 0)
    check_output(y, x)  # the harness's own check agrees


@ALL
@RATES
@LAYOUT
def test_deterministic_and_input_untouched(name, rate, layout, listener):
    proc, x, presentation = case(name, rate, layout, listener)
    before = x.copy()
    y1 = proc.process(x, presentation, rng=np.random.default_rng(123))
    np.testing.assert_array_equal(x, before)
    y2 = proc.process(x, presentation, rng=np.random.default_rng(123))
    np.testing.assert_array_equal(y1, y2)
    assert y1 is not x


@pytest.mark.parametrize("name", CHAINS)
def test_chain_is_a_frozen_processor_with_a_stable_id(name):
    proc = registry.create(name)
    assert isinstance(proc, Processor)
    assert proc.name == name and proc.label == name
    assert proc.config_id.startswith(name + "-") and proc.config_id == registry.create(name).config_id
    with pytest.raises(AttributeError):
        setattr(proc, "probe_attribute", 1)


@ALL
def test_fresh_instance_gives_the_same_output(name, listener):
    proc, x, presentation = case(name, 24000, "stereo", listener)
    y1 = proc.process(x, presentation, rng=np.random.default_rng(7))
    y2 = registry.create(name).process(x, presentation, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(y1, y2)


@ALL
def test_pickles_with_the_same_identity(name):
    """Processors travel to worker processes by pickle."""
    proc = registry.create(name)
    again = pickle.loads(pickle.dumps(proc))
    assert again == proc and again.config_id == proc.config_id and again.label == proc.label
