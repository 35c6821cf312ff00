"""An example third-party processor: a first-order spectral tilt plus broadband gain.

Use it without installing anything:

    bench run --processor examples/tilt_eq.py:TiltEQ,nalr --param examples/tilt_eq.py:TiltEQ.gain_db=10

or register it from your own package's pyproject.toml:

    [project.entry-points."haaqi_bench.processors"]
    tilt-eq = "my_package.tilt_eq:TiltEQ"
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from benchmark.errors import BenchError
from processors.base import Presentation, Processor


@dataclass(frozen=True)
class TiltEQ(Processor):
    """Broadband gain plus a high-frequency shelf that rises with the ear's high-frequency loss."""

    name = "tilt-eq"
    summary = "example plugin: broadband gain and a loss-dependent treble shelf"

    gain_db: float = 6.0
    shelf_per_db_hl: float = 0.25
    shelf_corner_hz: float = 1500.0

    def __post_init__(self) -> None:
        if not -40 <= self.gain_db <= 40:
            raise BenchError("gain_db must lie in -40..40 dB")

    def process(self, signal: np.ndarray, presentation: Presentation, *,
                rng: np.random.Generator) -> np.ndarray:
        rate = presentation.sample_rate_hz
        out = np.empty_like(signal, dtype=np.float32)
        # one-pole low-pass; high band = input - low band
        a = np.exp(-2 * np.pi * self.shelf_corner_hz / rate)
        for ch in range(signal.shape[0]):
            hf_loss_db = float(np.mean(presentation.audiogram(ch).at([2000, 4000])))
            shelf = 10 ** (self.shelf_per_db_hl * hf_loss_db / 20) - 1
            low = lfilter([1 - a], [1, -a], signal[ch])
            y = signal[ch] + shelf * (signal[ch] - low)
            out[ch] = (10 ** (self.gain_db / 20) * y).astype(np.float32)
        return out
