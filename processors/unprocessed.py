"""The unaided signal: what the listener hears without a hearing aid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from processors.base import Presentation, Processor


@dataclass(frozen=True)
class Unprocessed(Processor):
    """Passes the input through unchanged (the unaided baseline)."""

    name = "unprocessed"
    summary = "no hearing aid: the input as it arrives at the ear"

    def process(self, signal: np.ndarray, presentation: Presentation, *,
                rng: np.random.Generator) -> np.ndarray:
        return np.array(signal, dtype=np.float32, copy=True)
