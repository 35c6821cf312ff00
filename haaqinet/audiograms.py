"""A deterministic generator of realistic audiograms, for HAAQI-Net training data.

``generate_listener(index, seed=...)`` returns the same :class:`~benchmark.audiogram.Listener`
for the same ``(index, seed)`` on any machine. Each listener has two ears, in dB HL
at the 8 standard frequencies (250, 500, 1k, 2k, 3k, 4k, 6k, 8k Hz).

How a listener is drawn (``numpy.random.default_rng([seed, index])``):

1. **Severity**: a WHO 2021 grade of the 4-frequency pure-tone average (PTA of
   500, 1k, 2k, 4k Hz), with the probabilities of :data:`GRADE_WEIGHTS` (every
   grade is well represented, unlike in the population, so the model sees the whole
   range), then a target PTA uniform inside the grade (profound: 80-100 dB HL).
2. **Shape** (:data:`SHAPE_WEIGHTS`), a relative profile over the 8 frequencies:
   ``flat``; ``sloping`` (rising 5-15 dB per octave above 500 Hz); ``steep``
   (ski slope: flat, then 20-35 dB per octave from 1-3 kHz); ``notch``
   (noise-induced: a 15-30 dB dip centred on 3-6 kHz); ``reverse`` (low-frequency
   loss); ``cookie-bite`` (mid-frequency loss).
3. The profile is shifted so its PTA equals the target, jittered by 3 dB (sd)
   per frequency, limited to -10..120 dB HL and rounded to 5 dB, as audiometers do.
4. **Asymmetry**: with probability 0.2 the right ear is drawn again with a PTA
   15-30 dB away from the left ear's (either side) and its own shape; otherwise it
   is the left ear plus a 5-dB (sd) per-frequency jitter.
"""

from __future__ import annotations

import numpy as np

from benchmark.audiogram import STANDARD_FREQUENCIES_HZ, Audiogram, Listener

#: WHO grades and their PTA range in dB HL, with the probability of each.
GRADES = {
    "normal": (0.0, 20.0),
    "mild": (20.0, 35.0),
    "moderate": (35.0, 50.0),
    "moderately-severe": (50.0, 65.0),
    "severe": (65.0, 80.0),
    "profound": (80.0, 100.0),
}
GRADE_WEIGHTS = {"normal": 0.10, "mild": 0.20, "moderate": 0.22, "moderately-severe": 0.20,
                 "severe": 0.16, "profound": 0.12}
SHAPE_WEIGHTS = {"flat": 0.25, "sloping": 0.35, "steep": 0.17, "notch": 0.13, "reverse": 0.05,
                 "cookie-bite": 0.05}
#: Probability that the two ears differ by 15-30 dB PTA.
ASYMMETRIC_PROBABILITY = 0.2
LIMITS_DB_HL = (-10.0, 120.0)

_OCTAVES = np.log2(np.asarray(STANDARD_FREQUENCIES_HZ) / 1000.0)  # -2 .. 3
_PTA_INDEX = [1, 2, 3, 5]  # 500, 1000, 2000, 4000 Hz


def _profile(shape: str, rng: np.random.Generator) -> np.ndarray:
    """Relative thresholds (dB) at the 8 standard frequencies for ``shape``."""
    o = _OCTAVES
    if shape == "flat":
        return rng.normal(0.0, 2.0, o.size)
    if shape == "sloping":
        return rng.uniform(5.0, 15.0) * np.maximum(o + 1.0, 0.0)
    if shape == "steep":
        knee = rng.uniform(0.0, np.log2(3.0))
        return rng.uniform(20.0, 35.0) * np.maximum(o - knee, 0.0)
    if shape == "notch":
        centre = rng.uniform(np.log2(3.0), np.log2(6.0))
        base = rng.uniform(0.0, 8.0) * np.maximum(o, 0.0)
        return base + rng.uniform(15.0, 30.0) * np.exp(-0.5 * ((o - centre) / 0.45) ** 2)
    if shape == "reverse":
        return rng.uniform(8.0, 15.0) * np.maximum(1.0 - o, 0.0)
    if shape == "cookie-bite":
        return rng.uniform(15.0, 30.0) * np.exp(-0.5 * ((o - rng.uniform(-0.5, 1.0)) / 0.8) ** 2)
    raise ValueError(f"unknown audiogram shape {shape!r}")


def _choice(rng: np.random.Generator, weights: dict) -> str:
    names = list(weights)
    p = np.asarray([weights[n] for n in names], dtype=float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def draw_ear(rng: np.random.Generator, *, pta_db_hl: float | None = None,
             shape: str | None = None) -> tuple[np.ndarray, str]:
    """One ear's thresholds, float array (8,) in dB HL, and its shape name."""
    if pta_db_hl is None:
        lo, hi = GRADES[_choice(rng, GRADE_WEIGHTS)]
        pta_db_hl = rng.uniform(lo, hi)
    shape = shape or _choice(rng, SHAPE_WEIGHTS)
    rel = _profile(shape, rng)
    levels = rel - rel[_PTA_INDEX].mean() + pta_db_hl + rng.normal(0.0, 3.0, rel.size)
    levels = np.clip(levels, *LIMITS_DB_HL)
    return 5.0 * np.round(levels / 5.0), shape


def generate_listener(index: int, *, seed: int = 0) -> Listener:
    """The generated listener number ``index`` (deterministic in ``(index, seed)``).

    Its name is ``G<seed>-<index>``; the ears are named ``<name>-left`` / ``-right``.
    """
    rng = np.random.default_rng([int(seed), int(index), 0xA0D1])
    left, shape = draw_ear(rng)
    left_pta = float(left[_PTA_INDEX].mean())
    if rng.random() < ASYMMETRIC_PROBABILITY:
        delta = rng.uniform(15.0, 30.0) * (1.0 if rng.random() < 0.5 or left_pta < 15 else -1.0)
        right, _ = draw_ear(rng, pta_db_hl=float(np.clip(left_pta + delta, -5.0, 110.0)))
    else:
        right = 5.0 * np.round(np.clip(left + rng.normal(0.0, 5.0, left.size), *LIMITS_DB_HL) / 5.0)
    name = f"G{int(seed)}-{int(index)}"
    return Listener(name, Audiogram(tuple(left), STANDARD_FREQUENCIES_HZ, f"{name}-left"),
                    Audiogram(tuple(right), STANDARD_FREQUENCIES_HZ, f"{name}-right"))


def generate_listeners(n: int, *, seed: int = 0, start: int = 0) -> list[Listener]:
    """Listeners ``start .. start + n - 1`` of the generator with ``seed``."""
    return [generate_listener(i, seed=seed) for i in range(start, start + n)]
