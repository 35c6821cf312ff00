"""RNNoise (Valin 2018) through ``pyrnnoise``: an optional extra.

RNNoise is a small recurrent network that predicts 22 band gains (plus a pitch
comb filter) for 10-ms frames at 48 kHz. It was trained for speech: on music
it helps at low SNR and loud levels, but costs SI-SDR at 10 dB SNR or at low
digital levels (it reads its input on the 16-bit integer scale, so its
behaviour depends on the level). It has no attenuation limit; ``mix`` blends
the denoised output with the input to limit the damage.

Each channel is resampled to 48 kHz, scaled to the 16-bit range (``x *
32768``, not clipped), pushed frame by frame through a fresh RNNoise state
(calling the C library through pyrnnoise's ctypes binding; pyrnnoise's own
audio-file layer is not used), shifted back by RNNoise's delay of 960 samples
(20 ms), resampled back and cut to the input's length.

Install with ``pip install haaqi-bench[rnnoise]``; the package is imported
only when the processor runs. Deterministic: no random numbers.

Reference: J.-M. Valin (2018), "A hybrid DSP/deep learning approach to real-time
full-band speech enhancement", Proc. IEEE MMSP 2018.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

import numpy as np

from benchmark.errors import BenchError
from processors.base import Presentation, Processor, match_length
from processors.dsp import channel_audiograms, check_finite_in
from processors.spectral import resample

RNNOISE_RATE_HZ = 48000
#: RNNoise's delay in samples at 48 kHz (two 10-ms frames), measured by cross-correlation.
RNNOISE_DELAY = 960
INT16_SCALE = 32768.0


@functools.lru_cache(maxsize=1)
def _library():
    """pyrnnoise's ctypes module (``lib``, ``create``, ``destroy``, ``FRAME_SIZE``)."""
    try:
        from pyrnnoise import rnnoise
    except ImportError as exc:
        raise BenchError(
            "the rnnoise processor needs the optional package pyrnnoise: "
            f"pip install haaqi-bench[rnnoise] ({exc})") from None
    except OSError as exc:  # the shared library is missing or does not load
        raise BenchError(f"pyrnnoise is installed but its library does not load: {exc}") from None
    return rnnoise


def denoise_48k(x: np.ndarray) -> np.ndarray:
    """RNNoise on one 48-kHz channel ``x`` (1-D, full scale 1.0); float64, same length, aligned."""
    lib = _library()
    frame = int(lib.FRAME_SIZE)
    n = x.size
    n_frames = -(-(n + RNNOISE_DELAY) // frame)
    buf = np.zeros(n_frames * frame, dtype=np.float32)
    buf[:n] = np.asarray(x, dtype=np.float64) * INT16_SCALE
    state = lib.create()
    if not state:
        raise BenchError("rnnoise_create failed")
    try:
        process_frame = lib.lib.rnnoise_process_frame
        for i in range(n_frames):
            view = buf[i * frame:(i + 1) * frame]  # processed in place (C allows in == out)
            ptr = view.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            process_frame(state, ptr, ptr)
    finally:
        lib.destroy(state)
    return buf[RNNOISE_DELAY:RNNOISE_DELAY + n].astype(np.float64) / INT16_SCALE


@dataclass(frozen=True)
class RNNoise(Processor):
    """RNNoise per channel at 48 kHz, resampled to and from the signal's rate.

    Attributes:
        mix: share of the denoised signal in the output (1 = RNNoise only, 0 = the input).
    """

    name = "rnnoise"
    summary = "RNNoise speech denoiser (pyrnnoise, optional extra), 48 kHz"

    mix: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mix", check_finite_in(self.mix, 0.0, 1.0, what="mix"))

    def process(self, signal: np.ndarray, presentation: Presentation, *,
                rng: np.random.Generator) -> np.ndarray:
        channel_audiograms(signal, presentation)
        rate = int(presentation.sample_rate_hz)
        x48 = resample(signal, rate, RNNOISE_RATE_HZ)
        y48 = np.stack([denoise_48k(ch) for ch in x48])
        y = match_length(resample(y48, RNNOISE_RATE_HZ, rate), signal.shape[1])
        x = np.asarray(signal, dtype=np.float64)
        return (self.mix * y + (1.0 - self.mix) * x).astype(np.float32)
