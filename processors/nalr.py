"""NAL-R: the linear prescription of the Clarity and Cadenza baselines.

The gain at 250, 500, 1000, 2000, 4000 and 6000 Hz is pyclarity's NAL-R
(``clarity.enhancer.nalr.NALR``)::

    gain_db = X + 0.31 * HL + bias,  clipped at 0 dB
    X    = 0.05 * (HL_500 + HL_1000 + HL_2000)            if that sum <= 180 dB
         = 9 + 0.116 * (HL_500 + HL_1000 + HL_2000 - 180) otherwise
    bias = (-17, -8, +1, -1, -2, -2) dB

It is realised as a linear-phase FIR with ``nfir_taps + 1`` coefficients,
designed by frequency sampling with the gain interpolated linearly in
frequency (flat below 250 Hz and above 6 kHz). An audiogram of 0 dB HL
everywhere gets a pure delay (pyclarity's rule; the formula alone would give
+1 dB at 1 kHz).

Delay: the output is the input delayed by ``nfir_taps / 2`` samples (110
samples = 2.49 ms at 44.1 kHz, 4.58 ms at 24 kHz), cut to the input's length.
The delay is not compensated: a hearing aid is causal, HAAQI aligns the
signals, and the last ``nfir_taps / 2`` samples of the input are dropped.

``nfir_taps`` is a number of taps, not a duration, as in the CAD1 recipe
(220 at 44.1 kHz). It is not scaled with the sample rate, so the filter is
longer, and its frequency resolution finer, at lower rates. At 44.1 kHz the
220-tap window smooths the gain curve where the prescription bends: measured
for the Bisgaard audiograms, the realised gain is up to about 4 dB above the
formula at 250 Hz and 1-2 dB at 500 Hz, and within about 0.75 dB from 1 to
6 kHz (at 24 kHz: about 2 dB, 1 dB and 0.5 dB). Raise ``nfir_taps`` for a
closer fit.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from benchmark.audiogram import Audiogram
from benchmark.errors import BenchError
from processors.base import Presentation, Processor, match_length
from processors.dsp import channel_audiograms, to_clarity_audiogram

#: Audiometric frequencies in Hz at which pyclarity's NAL-R reads the audiogram.
NALR_FREQUENCIES_HZ = (250.0, 500.0, 1000.0, 2000.0, 4000.0, 6000.0)

_MAX_TAPS = 16384


@functools.lru_cache(maxsize=512)
def nalr_fir(levels_db_hl: tuple[float, ...], frequencies_hz: tuple[float, ...],
             sample_rate_hz: float, nfir_taps: int) -> np.ndarray:
    """The NAL-R FIR for one ear (read-only; cached per audiogram, rate and length).

    Args:
        levels_db_hl: thresholds in dB HL.
        frequencies_hz: their frequencies in Hz.
        sample_rate_hz: sample rate in Hz.
        nfir_taps: filter order (the filter has ``nfir_taps + 1`` coefficients).

    Returns:
        float64 array, shape (nfir_taps + 1,), linear phase, delay ``nfir_taps // 2`` samples.
    """
    from clarity.enhancer.nalr import NALR as ClarityNALR

    audiogram = Audiogram(levels_db_hl, frequencies_hz)
    fir, _ = ClarityNALR(nfir_taps, sample_rate_hz).build(
        to_clarity_audiogram(audiogram, NALR_FREQUENCIES_HZ)
    )
    fir = np.array(fir, dtype=np.float64)
    fir.setflags(write=False)
    return fir


def check_nfir_taps(nfir_taps: int) -> None:
    """Raise :class:`BenchError` unless ``nfir_taps`` is an even int in 2..16384."""
    if isinstance(nfir_taps, bool) or not isinstance(nfir_taps, (int, np.integer)):
        raise BenchError(f"nfir_taps must be an integer, got {nfir_taps!r}")
    if not 2 <= nfir_taps <= _MAX_TAPS or nfir_taps % 2:
        raise BenchError(
            f"nfir_taps = {nfir_taps} must be even (a whole-sample delay of nfir_taps/2) "
            f"and between 2 and {_MAX_TAPS}"
        )


def apply_nalr(signal: np.ndarray, presentation: Presentation, nfir_taps: int) -> np.ndarray:
    """NAL-R for each channel's ear; float64 out, same shape, delayed by ``nfir_taps // 2``."""
    audiograms = channel_audiograms(signal, presentation)
    x = np.asarray(signal, dtype=np.float64)
    out = np.empty_like(x)
    for i, audiogram in enumerate(audiograms):
        fir = nalr_fir(audiogram.levels_db_hl, audiogram.frequencies_hz,
                       float(presentation.sample_rate_hz), int(nfir_taps))
        out[i] = match_length(np.convolve(x[i], fir), x.shape[1])
    return out


@dataclass(frozen=True)
class NALR(Processor):
    """Linear NAL-R amplification per ear (CAD1 baseline without the AGC).

    Attributes:
        nfir_taps: FIR order in samples, even; the filter adds ``nfir_taps / 2`` samples of delay.
    """

    name = "nalr"
    summary = "NAL-R linear prescription per ear (pyclarity FIR, 220 taps as in CAD1)"

    nfir_taps: int = 220

    def __post_init__(self) -> None:
        check_nfir_taps(self.nfir_taps)
        object.__setattr__(self, "nfir_taps", int(self.nfir_taps))  # numpy ints -> int

    def process(self, signal: np.ndarray, presentation: Presentation, *,
                rng: np.random.Generator) -> np.ndarray:
        return apply_nalr(signal, presentation, self.nfir_taps).astype(np.float32)
