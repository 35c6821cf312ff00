"""The one contract every hearing-aid processor follows.

A processor is a frozen dataclass whose fields are its parameters (with
units in their names). It has one method::

    process(signal, presentation, *, rng) -> np.ndarray

* ``signal``: float32 array, shape (n_channels, n_samples), full scale = 1.0,
  time last. Channel ``i`` feeds ear ``presentation.ears[i]``.
* ``presentation``: the sample rate, the listener (an audiogram per ear), the
  calibration (so a compressor knows the dB SPL of its input) and the ears.
* ``rng``: a :class:`numpy.random.Generator` seeded from the trial key; the
  only source of randomness a processor may use.

It returns float32, the same shape and the same sample rate. Any delay the
processor adds is the processor's own business: HAAQI aligns signals.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from benchmark.audiogram import Audiogram, Listener
from benchmark.calibration import Calibration
from benchmark.errors import AudioError, BenchError


@dataclass(frozen=True)
class Presentation:
    """How a signal reaches the listener.

    Attributes:
        sample_rate_hz: sample rate of the signal in Hz.
        listener: the listener, with an audiogram per ear.
        calibration: digital level to dB SPL mapping shared by the trial.
        ears: the ear each channel feeds, e.g. ("left", "right").
    """

    sample_rate_hz: int
    listener: Listener
    calibration: Calibration
    ears: tuple[str, ...] = ("left", "right")

    def audiogram(self, channel: int) -> Audiogram:
        """The audiogram of the ear that channel ``channel`` feeds."""
        return self.listener.ear(self.ears[channel])


class Processor(abc.ABC):
    """Base class of every processor. Subclasses are frozen dataclasses."""

    #: Registry name, e.g. "nalr".
    name: ClassVar[str] = ""
    #: One line for ``bench ls processors``.
    summary: ClassVar[str] = ""

    @abc.abstractmethod
    def process(
        self, signal: np.ndarray, presentation: Presentation, *, rng: np.random.Generator
    ) -> np.ndarray:
        """Process ``signal`` for ``presentation``; see the module docstring."""

    # -- identity -----------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """The parameters as a JSON-able dict (dataclass fields)."""
        if not dataclasses.is_dataclass(self):
            return {}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @property
    def config_id(self) -> str:
        """Stable id: the name and a hash of the parameters, e.g. ``nalr-3f2a9c1d``."""
        blob = json.dumps({"name": self.name, "params": self.params()}, sort_keys=True, default=str)
        return f"{self.name}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"

    @property
    def label(self) -> str:
        """Human label: the name plus any parameters that differ from the defaults."""
        changed = []
        if dataclasses.is_dataclass(self):
            for f in dataclasses.fields(self):
                default = f.default if f.default is not dataclasses.MISSING else None
                if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                    default = f.default_factory()  # type: ignore[misc]
                if getattr(self, f.name) != default:
                    changed.append(f"{f.name}={getattr(self, f.name)}")
        return self.name + (f"({', '.join(changed)})" if changed else "")


def check_signal(signal: np.ndarray, *, what: str = "signal") -> np.ndarray:
    """Check the array layout at a boundary: float, shape (n_channels, n_samples), finite."""
    x = np.asarray(signal)
    if x.ndim != 2:
        raise AudioError(f"{what} must have shape (n_channels, n_samples); got shape {x.shape}")
    if x.shape[0] > 8 and x.shape[1] <= 8:
        raise AudioError(
            f"{what} has shape {x.shape}: time must be the last axis (n_channels, n_samples)"
        )
    if x.shape[1] == 0:
        raise AudioError(f"{what} is empty")
    if not np.issubdtype(x.dtype, np.floating):
        raise AudioError(f"{what} must be floating point, got {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{what} contains NaN or infinite samples")
    return x


def check_output(out: Any, signal: np.ndarray) -> np.ndarray:
    """Validate a processor's output against its input; raise :class:`AudioError` if broken."""
    if not isinstance(out, np.ndarray):
        raise AudioError(f"processor returned {type(out).__name__}, expected a numpy array")
    if out.shape != signal.shape:
        raise AudioError(f"processor returned shape {out.shape}, expected {signal.shape}")
    check_signal(out, what="processor output")
    if not np.any(out):
        raise AudioError("processor returned silence (all samples zero)")
    return out.astype(np.float32, copy=False)


def match_length(y: np.ndarray, n_samples: int) -> np.ndarray:
    """Trim or zero-pad the last axis of ``y`` to ``n_samples``."""
    if y.shape[-1] >= n_samples:
        return y[..., :n_samples]
    pad = [(0, 0)] * (y.ndim - 1) + [(0, n_samples - y.shape[-1])]
    return np.pad(y, pad)


__all__ = ["Presentation", "Processor", "check_signal", "check_output", "match_length", "BenchError"]
