"""Audiograms and listeners.

An :class:`Audiogram` holds hearing thresholds in dB HL at audiometric
frequencies in Hz. A :class:`Listener` holds one audiogram per ear. Every ear
is scored with its own audiogram.

Built-in audiograms:

* ``NH``: normal hearing, 0 dB HL everywhere.
* ``N1``-``N7`` and ``S1``-``S3``: Bisgaard et al. (2010) standard audiograms
  (IEC 60118-15), defined at 250-6000 Hz. The 8 kHz value is taken equal to
  the 6 kHz value (flat extrapolation), so that every built-in covers the
  standard 8 frequencies.
* ``mild``, ``moderate``, ``moderate-severe``: pyclarity's example
  audiograms (``AUDIOGRAM_MILD`` etc.), copied as numbers.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.errors import BenchError

#: The 8 standard audiometric frequencies in Hz used wherever a user gives
#: an audiogram as 8 values.
STANDARD_FREQUENCIES_HZ: tuple[float, ...] = (250, 500, 1000, 2000, 3000, 4000, 6000, 8000)

_BISGAARD_FREQUENCIES_HZ = (250, 375, 500, 750, 1000, 1500, 2000, 3000, 4000, 6000, 8000)
_BISGAARD_DB_HL = {
    "N1": (10, 10, 10, 10, 10, 10, 15, 20, 30, 40),
    "N2": (20, 20, 20, 22.5, 25, 30, 35, 40, 45, 50),
    "N3": (35, 35, 35, 35, 40, 45, 50, 55, 60, 65),
    "N4": (55, 55, 55, 55, 55, 60, 65, 70, 75, 80),
    "N5": (65, 67.5, 70, 72.5, 75, 80, 80, 80, 80, 80),
    "N6": (75, 77.5, 80, 82.5, 85, 90, 90, 95, 100, 100),
    "N7": (90, 92.5, 95, 100, 105, 105, 105, 105, 105, 105),
    "S1": (10, 10, 10, 10, 10, 10, 15, 30, 55, 70),
    "S2": (20, 20, 20, 22.5, 25, 35, 55, 75, 95, 95),
    "S3": (30, 30, 35, 47.5, 60, 70, 75, 80, 80, 85),
}
# pyclarity.utils.audiogram AUDIOGRAM_MILD / _MODERATE / _MODERATE_SEVERE (numbers only).
_PYCLARITY_FREQUENCIES_HZ = (125, 250, 500, 750, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 10000,
                             12000, 14000, 16000)
_PYCLARITY_DB_HL = {
    "mild": (5, 10, 15, 18, 19, 22, 25, 28, 31, 35, 38, 40, 40, 45, 50),
    "moderate": (15, 20, 20, 22.5, 25, 30, 35, 40, 45, 50, 55, 55, 60, 65, 65),
    "moderate-severe": (19, 19, 28, 35, 40, 47, 52, 56, 58, 58, 63, 70, 75, 80, 80),
}


@dataclass(frozen=True)
class Audiogram:
    """Hearing thresholds of one ear.

    Attributes:
        levels_db_hl: thresholds in dB HL, one per frequency.
        frequencies_hz: audiometric frequencies in Hz, strictly increasing.
        name: a label for tables ("N3", "L0001-left", or "custom").
    """

    levels_db_hl: tuple[float, ...]
    frequencies_hz: tuple[float, ...] = STANDARD_FREQUENCIES_HZ
    name: str = "custom"

    def __post_init__(self) -> None:
        levels = tuple(float(v) for v in self.levels_db_hl)
        freqs = tuple(float(f) for f in self.frequencies_hz)
        object.__setattr__(self, "levels_db_hl", levels)
        object.__setattr__(self, "frequencies_hz", freqs)
        if len(levels) != len(freqs) or len(levels) < 2:
            raise BenchError(
                f"audiogram {self.name!r}: {len(levels)} levels for {len(freqs)} frequencies"
            )
        if any(not math.isfinite(v) for v in levels):
            raise BenchError(f"audiogram {self.name!r}: levels must be finite, got {levels}")
        if any(v < -20 or v > 130 for v in levels):
            raise BenchError(
                f"audiogram {self.name!r}: levels must lie in -20..130 dB HL, got {levels}"
            )
        if any(b <= a for a, b in zip(freqs, freqs[1:])):
            raise BenchError(f"audiogram {self.name!r}: frequencies must increase, got {freqs}")

    def at(self, frequencies_hz) -> np.ndarray:
        """Thresholds in dB HL at other frequencies (linear in log frequency, flat beyond the ends)."""
        return np.interp(
            np.log2(np.asarray(frequencies_hz, dtype=float)),
            np.log2(self.frequencies_hz),
            self.levels_db_hl,
        )

    @property
    def pta_db_hl(self) -> float:
        """Pure-tone average over 500, 1000, 2000 and 4000 Hz, in dB HL."""
        return float(np.mean(self.at([500, 1000, 2000, 4000])))

    @property
    def severity(self) -> str:
        """WHO-style grade of the 4-frequency pure-tone average."""
        return severity_of(self.pta_db_hl)


def severity_of(pta_db_hl: float) -> str:
    """Severity group of a pure-tone average in dB HL."""
    for limit, label in ((20, "normal"), (35, "mild"), (50, "moderate"), (65, "moderately-severe"),
                         (80, "severe")):
        if pta_db_hl < limit:
            return label
    return "profound"


SEVERITY_ORDER = ("normal", "mild", "moderate", "moderately-severe", "severe", "profound")


@dataclass(frozen=True)
class Listener:
    """A listener: one audiogram per ear."""

    name: str
    left: Audiogram
    right: Audiogram

    def ear(self, ear: str) -> Audiogram:
        """The audiogram of ``ear`` ("left" or "right")."""
        if ear not in ("left", "right"):
            raise BenchError(f"ear must be 'left' or 'right', got {ear!r}")
        return self.left if ear == "left" else self.right


def builtin_audiograms() -> dict[str, Audiogram]:
    """All built-in audiograms by name."""
    out = {"NH": Audiogram((0.0,) * 8, STANDARD_FREQUENCIES_HZ, "NH")}
    for name, levels in _BISGAARD_DB_HL.items():
        out[name] = Audiogram(levels + (levels[-1],), _BISGAARD_FREQUENCIES_HZ, name)
    for name, levels in _PYCLARITY_DB_HL.items():
        out[name] = Audiogram(levels, _PYCLARITY_FREQUENCIES_HZ, name)
    return out


def parse_audiogram(text: str) -> Audiogram:
    """A built-in name, or 8 dB HL values at the standard frequencies.

    Values may be separated by commas, semicolons or spaces:
    ``"N3"``, ``"10,20,30,40,50,60,60,60"``, ``"10 20 30 40 50 60 60 60"``.
    """
    text = str(text).strip()
    builtins = builtin_audiograms()
    if text in builtins:
        return builtins[text]
    lowered = {k.lower(): v for k, v in builtins.items()}
    if text.lower() in lowered:
        return lowered[text.lower()]
    parts = [p for p in re.split(r"[,;\s]+", text) if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        from benchmark.registry_util import did_you_mean

        raise BenchError(
            f"unknown audiogram {text!r}{did_you_mean(text, builtins)}; give a built-in name "
            f"({', '.join(builtins)}) or 8 dB HL values at {list(map(int, STANDARD_FREQUENCIES_HZ))} Hz"
        ) from None
    if len(values) != len(STANDARD_FREQUENCIES_HZ):
        raise BenchError(
            f"audiogram {text!r} has {len(values)} values; expected 8 dB HL values at "
            f"{list(map(int, STANDARD_FREQUENCIES_HZ))} Hz"
        )
    return Audiogram(values, STANDARD_FREQUENCIES_HZ, "custom:" + ",".join(f"{v:g}" for v in values))


def listeners_from_names(names: list[str]) -> list[Listener]:
    """Listeners with the same audiogram in both ears, one per name or value list."""
    out = []
    for name in names:
        a = parse_audiogram(name)
        out.append(Listener(a.name, a, a))
    return out


def load_listeners_json(path: str | Path) -> list[Listener]:
    """Read a Clarity/Cadenza ``listeners.json``.

    Format: ``{"L0001": {"name": "L0001", "audiogram_cfs": [250, ...],
    "audiogram_levels_l": [...], "audiogram_levels_r": [...]}, ...}``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BenchError(f"listeners file not found: {path}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise BenchError(f"cannot read listeners file {path}: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise BenchError(f"{path}: expected a non-empty JSON object of listeners")
    listeners = []
    for key, entry in data.items():
        try:
            name = str(entry.get("name", key))
            cfs = entry["audiogram_cfs"]
            left = Audiogram(entry["audiogram_levels_l"], cfs, f"{name}-left")
            right = Audiogram(entry["audiogram_levels_r"], cfs, f"{name}-right")
        except (KeyError, TypeError, AttributeError) as exc:
            raise BenchError(
                f"{path}: listener {key!r} needs 'audiogram_cfs', 'audiogram_levels_l' and "
                f"'audiogram_levels_r' ({type(exc).__name__}: {exc})"
            ) from None
        except BenchError as exc:
            raise BenchError(f"{path}: listener {key!r}: {exc}") from None
        listeners.append(Listener(name, left, right))
    return listeners
