"""Small DSP helpers shared by the pyclarity-based processors.

Nothing here is an algorithm of its own: these are the conversions between
haaqi-bench's conventions (``(n_channels, n_samples)`` float32, audiograms as
:class:`benchmark.audiogram.Audiogram`, levels through a
:class:`benchmark.calibration.Calibration`) and pyclarity's.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
from types import ModuleType

import numpy as np

from benchmark.audiogram import Audiogram
from benchmark.errors import AudioError, BenchError
from processors.base import Presentation, check_signal

def channel_audiograms(signal: np.ndarray, presentation: Presentation) -> list[Audiogram]:
    """Check ``signal`` and return the audiogram of the ear each channel feeds.

    Args:
        signal: float array, shape (n_channels, n_samples), full scale = 1.0.
        presentation: gives ``ears``, one per channel.

    Raises:
        AudioError: the layout is wrong or the channel count differs from ``presentation.ears``.
    """
    x = check_signal(signal)
    if x.shape[0] != len(presentation.ears):
        raise AudioError(
            f"signal has {x.shape[0]} channels but the presentation names "
            f"{len(presentation.ears)} ears {presentation.ears}"
        )
    return [presentation.audiogram(i) for i in range(x.shape[0])]


def to_clarity_audiogram(audiogram: Audiogram, frequencies_hz=None):
    """The same thresholds as a ``clarity.utils.audiogram.Audiogram``.

    Args:
        audiogram: thresholds in dB HL.
        frequencies_hz: if given, resample to these frequencies in Hz first (linear in
            log frequency, flat beyond the ends: the same rule as pyclarity's ``resample``).
    """
    from clarity.utils.audiogram import Audiogram as ClarityAudiogram

    if frequencies_hz is None:
        return ClarityAudiogram(
            levels=np.array(audiogram.levels_db_hl, dtype=float),
            frequencies=np.array(audiogram.frequencies_hz, dtype=float),
        )
    freqs = np.asarray(frequencies_hz, dtype=float)
    return ClarityAudiogram(levels=audiogram.at(freqs), frequencies=freqs)


def db_to_gain(db: float | np.ndarray) -> float | np.ndarray:
    """Amplitude factor of a level change in dB."""
    return 10.0 ** (np.asarray(db, dtype=float) / 20.0)


def soft_clip(x: np.ndarray) -> np.ndarray:
    """Hyperbolic-tangent soft clip: linear near 0, saturating at +-1.0 (full scale).

    This is the ``soft_clip`` of the Cadenza CAD1 recipes (``np.tanh``).
    """
    return np.tanh(x)


def check_below_nyquist(frequencies_hz, sample_rate_hz: float, *, what: str) -> None:
    """Raise :class:`BenchError` unless every frequency lies strictly below Nyquist."""
    nyquist = 0.5 * float(sample_rate_hz)
    too_high = [f for f in frequencies_hz if not 0.0 < float(f) < nyquist]
    if too_high:
        raise BenchError(
            f"{what} {too_high} Hz must lie between 0 and Nyquist ({nyquist:g} Hz) at "
            f"{sample_rate_hz:g} Hz; lower them or use a higher sample rate"
        )


def check_finite_in(value: float, low: float, high: float, *, what: str) -> float:
    """``value`` as a float if finite and within [low, high], else :class:`BenchError`."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise BenchError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(v) or not low <= v <= high:
        raise BenchError(f"{what} = {value!r} is out of range; use {low:g} to {high:g}")
    return v


def float_tuple(values, *, what: str, length: int | None = None) -> tuple[float, ...]:
    """``values`` as a tuple of finite floats (so that config ids do not depend on int/float)."""
    if isinstance(values, (int, float)):
        values = (values,)
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise BenchError(f"{what} must be a list of numbers, got {values!r}") from None
    if not all(math.isfinite(v) for v in out):
        raise BenchError(f"{what} must be finite, got {out}")
    if length is not None and len(out) != length:
        raise BenchError(f"{what} needs {length} values (one per band), got {len(out)}: {out}")
    return out


@contextlib.contextmanager
def root_logging_preserved():
    """Undo any change a pyclarity call makes to the root logger's handlers and level.

    ``clarity.enhancer.gha.gainrule_camfit`` calls ``logging.basicConfig(level=INFO)``
    when imported, and its module-level ``logging.debug(...)`` calls add a stderr
    handler to an unconfigured root logger. Either would change the logging of
    whatever program imports haaqi-bench.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


def import_quietly(module_name: str) -> ModuleType:
    """Import a pyclarity module without letting it reconfigure logging."""
    with root_logging_preserved():
        return importlib.import_module(module_name)
