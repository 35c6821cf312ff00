"""Multiband WDRC fitted per ear with CAMFIT: the Cadenza CAD2 baseline hearing aid.

Signal path, per ear: pyclarity's ``MultibandCompressor`` (4th-order
Linkwitz-Riley crossovers with all-pass phase matching, one feed-forward
compressor per band, bands summed), run by its numba reimplementation
:func:`processors.compressors.multiband_compress`. Nothing is clipped (CAD2: ``soft_clip:
False``). The crossovers are IIR filters, so the output is delayed by a
frequency-dependent group delay, not compensated (HAAQI aligns).

Settings from ``recipes/cad2/task2/baseline/config.yaml``: crossovers at
(250, 500, 1000, 2000, 4000) * sqrt(2) Hz, attack (11, 11, 14, 13, 11, 11) ms,
release (80, 80, 80, 80, 100, 100) ms, threshold -30 dB re digital full scale.

Fitting, as in ``recipes/cad2/common/amplification.py``: the compressive
CAMFIT rule (``clarity.enhancer.gha.gainrule_camfit.gainrule_camfit_compr``:
Moore et al. 1999, 45 dB noise gate, 100 dB SPL maximum output) gives a gain
table over band input levels of -10..110 dB SPL at 9 CAMFIT bands. From it,
per band:

* gain = CAMFIT gain at 65 dB SPL (``fit_level_db_spl``);
* compression ratio = 30 / (output at 85 dB SPL - output at 55 dB SPL)
  (``cr_low_db_spl``, ``cr_high_db_spl``); a zero output range (both levels
  already at the rule's maximum output, profound losses) gives ratio 1, as in CAD2;
* both interpolated, linearly in frequency, to the band centres (250, 500,
  1000, 2000, 4000, 6000) Hz.

Levels. pyclarity's compressor compares the instantaneous level of each band
sample, 20 log10 |x| in dB re digital full scale, with its threshold. Here the
threshold is a sound level, ``threshold_db_spl``, converted with the trial's
calibration: ``threshold_dbfs = threshold_db_spl - calibration.level1_db_spl``.
So soft presentations get the prescribed gain and loud ones are compressed,
whatever the file's digital level. CAD2 set the mixture to "roughly -40 dB"
before the compressor (comment in ``enhance.py``) and HAAQI then maps the
mixture's RMS to 65 dB SPL, so its -30 dB threshold sits about 10 dB above
the presentation level: the default ``threshold_db_spl`` is 65 + 10 = 75.

The make-up gain is chosen so that the static curve passes through the CAMFIT
gain at ``fit_level_db_spl``: ``makeup = gain + max(0, fit_level - threshold)
* (1 - 1/ratio)``. With the default threshold (75 >= 65) this is CAD2's
make-up gain exactly.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from benchmark.audiogram import Audiogram
from benchmark.errors import BenchError
from processors.base import Presentation, Processor
from processors.compressors import multiband_compress
from processors.dsp import (
    channel_audiograms,
    check_below_nyquist,
    check_finite_in,
    float_tuple,
    import_quietly,
    root_logging_preserved,
    to_clarity_audiogram,
)

# The CAMFIT analysis bands and their edges, in Hz (pyclarity gha_utils.get_gaintable).
CAMFIT_FREQUENCIES_HZ = (177.0, 297.0, 500.0, 841.0, 1414.0, 2378.0, 4000.0, 6727.0, 11314.0)
CAMFIT_EDGE_FREQUENCIES_HZ = (1e-8, 229.2793, 385.3570, 648.4597, 1090.5, 1833.7, 3084.2,
                              5187.3, 8724.1, 10000001.0)
#: Band input levels in dB SPL at which the CAMFIT table is computed.
CAMFIT_LEVELS_DB_SPL = tuple(float(v) for v in range(-10, 111))

_SQRT2 = float(np.sqrt(2.0))
CAD2_CROSSOVER_FREQUENCIES_HZ = tuple(round(f * _SQRT2, 2) for f in (250, 500, 1000, 2000, 4000))


@functools.lru_cache(maxsize=512)
def camfit_band_fit(
    levels_db_hl: tuple[float, ...],
    frequencies_hz: tuple[float, ...],
    band_centres_hz: tuple[float, ...],
    fit_level_db_spl: float,
    cr_low_db_spl: float,
    cr_high_db_spl: float,
    max_output_db_spl: float,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """CAMFIT gain (dB) and compression ratio per band for one ear (cached).

    Returns:
        ``(gains_db, ratios)``, one value per band centre.
    """
    rule = import_quietly("clarity.enhancer.gha.gainrule_camfit")
    ear = to_clarity_audiogram(Audiogram(levels_db_hl, frequencies_hz))
    levels = np.array(CAMFIT_LEVELS_DB_SPL)
    fit_model = {
        "frequencies": np.array(CAMFIT_FREQUENCIES_HZ),
        "edge_frequencies": np.array(CAMFIT_EDGE_FREQUENCIES_HZ),
        "levels": levels,
        "channels": 2,
        "side": "lr",
    }
    # the rule fits two ears at once; give it this ear twice and keep the first
    with root_logging_preserved():  # the rule logs through the root logger
        table, _, _ = rule.gainrule_camfit_compr(ear, ear, fit_model, 45.0, 1.0, 0.0,
                                                  max_output_db_spl)
    table = table[:, :, 0]  # (n_levels, n_camfit_bands), dB

    def gain_at(level_db_spl: float) -> np.ndarray:
        return np.array([np.interp(level_db_spl, levels, table[:, k])
                         for k in range(table.shape[1])])

    gain_low, gain_high = gain_at(cr_low_db_spl), gain_at(cr_high_db_spl)
    output_range = (cr_high_db_spl + gain_high) - (cr_low_db_spl + gain_low)
    ratio = np.divide(cr_high_db_spl - cr_low_db_spl, output_range,
                      out=np.ones_like(output_range), where=output_range > 0)
    centres = np.array(band_centres_hz)
    gains = np.interp(centres, CAMFIT_FREQUENCIES_HZ, gain_at(fit_level_db_spl))
    ratios = np.interp(centres, CAMFIT_FREQUENCIES_HZ, ratio)
    return tuple(float(g) for g in gains), tuple(float(r) for r in ratios)


@dataclass(frozen=True)
class CamfitWDRC(Processor):
    """Six-band WDRC with CAMFIT gains and ratios per ear (CAD2 baseline).

    Attributes:
        crossover_frequencies_hz: band edges in Hz, increasing (CAD2: 250..4000 Hz * sqrt 2).
        band_centres_hz: one frequency per band in Hz at which the fit is read (CAD2).
        attack_ms: attack time per band in ms (CAD2).
        release_ms: release time per band in ms (CAD2).
        threshold_db_spl: compression threshold, instantaneous band level in dB SPL.
        knee_width_db: soft-knee width in dB (0: hard knee, as CAD2).
        fit_level_db_spl: band input level whose CAMFIT gain is the band gain (CAD2: 65).
        cr_low_db_spl: lower input level of the ratio estimate (CAD2: 55).
        cr_high_db_spl: upper input level of the ratio estimate (CAD2: 85).
        max_output_db_spl: CAMFIT's maximum output level (pyclarity default 100).
    """

    name = "camfit-wdrc"
    summary = "CAD2 baseline: 6-band WDRC (pyclarity) with CAMFIT gains and ratios per ear"

    crossover_frequencies_hz: tuple[float, ...] = CAD2_CROSSOVER_FREQUENCIES_HZ
    band_centres_hz: tuple[float, ...] = (250.0, 500.0, 1000.0, 2000.0, 4000.0, 6000.0)
    attack_ms: tuple[float, ...] = (11.0, 11.0, 14.0, 13.0, 11.0, 11.0)
    release_ms: tuple[float, ...] = (80.0, 80.0, 80.0, 80.0, 100.0, 100.0)
    threshold_db_spl: float = 75.0
    knee_width_db: float = 0.0
    fit_level_db_spl: float = 65.0
    cr_low_db_spl: float = 55.0
    cr_high_db_spl: float = 85.0
    max_output_db_spl: float = 100.0

    def __post_init__(self) -> None:
        crossovers = float_tuple(self.crossover_frequencies_hz, what="crossover_frequencies_hz")
        if not crossovers or any(f <= 0 for f in crossovers) or any(
                b <= a for a, b in zip(crossovers, crossovers[1:])):
            raise BenchError(f"crossover_frequencies_hz must be positive and increasing, "
                             f"got {crossovers}")
        n_bands = len(crossovers) + 1
        centres = float_tuple(self.band_centres_hz, what="band_centres_hz", length=n_bands)
        edges = (0.0,) + crossovers + (float("inf"),)
        for k, centre in enumerate(centres):
            if not edges[k] < centre < edges[k + 1]:
                raise BenchError(f"band_centres_hz[{k}] = {centre:g} Hz lies outside its band "
                                 f"({edges[k]:g}..{edges[k + 1]:g} Hz)")
        values = {
            "crossover_frequencies_hz": crossovers,
            "band_centres_hz": centres,
            "attack_ms": float_tuple(self.attack_ms, what="attack_ms", length=n_bands),
            "release_ms": float_tuple(self.release_ms, what="release_ms", length=n_bands),
        }
        for field in ("attack_ms", "release_ms"):
            for v in values[field]:
                check_finite_in(v, 0.01, 10_000.0, what=field)
        for field, (low, high) in {
            "threshold_db_spl": (-10.0, 140.0),
            "knee_width_db": (0.0, 40.0),
            "fit_level_db_spl": (-10.0, 110.0),
            "cr_low_db_spl": (-10.0, 110.0),
            "cr_high_db_spl": (-10.0, 110.0),
            "max_output_db_spl": (40.0, 140.0),
        }.items():
            values[field] = check_finite_in(getattr(self, field), low, high, what=field)
        if values["cr_low_db_spl"] >= values["cr_high_db_spl"]:
            raise BenchError(f"cr_low_db_spl ({values['cr_low_db_spl']:g}) must be below "
                             f"cr_high_db_spl ({values['cr_high_db_spl']:g})")
        for field, value in values.items():
            object.__setattr__(self, field, value)

    def band_settings(self, audiogram: Audiogram) -> tuple[np.ndarray, np.ndarray]:
        """Make-up gain in dB and compression ratio per band for one ear."""
        gains, ratios = camfit_band_fit(
            audiogram.levels_db_hl, audiogram.frequencies_hz, self.band_centres_hz,
            self.fit_level_db_spl, self.cr_low_db_spl, self.cr_high_db_spl,
            self.max_output_db_spl,
        )
        gains, ratios = np.array(gains), np.array(ratios)
        above = max(0.0, self.fit_level_db_spl - self.threshold_db_spl)
        return gains + above * (1.0 - 1.0 / ratios), ratios

    def process(self, signal: np.ndarray, presentation: Presentation, *,
                rng: np.random.Generator) -> np.ndarray:
        audiograms = channel_audiograms(signal, presentation)
        rate = float(presentation.sample_rate_hz)
        check_below_nyquist(self.crossover_frequencies_hz, rate, what="crossover frequencies")
        x = np.asarray(signal, dtype=np.float64)
        threshold_dbfs = self.threshold_db_spl - presentation.calibration.level1_db_spl
        out = np.empty_like(x)
        for i, audiogram in enumerate(audiograms):
            makeup_db, ratios = self.band_settings(audiogram)
            out[i] = multiband_compress(
                x[i],
                sample_rate_hz=rate,
                crossover_frequencies_hz=self.crossover_frequencies_hz,
                attack_ms=self.attack_ms,
                release_ms=self.release_ms,
                threshold_db=float(threshold_dbfs),
                ratio=ratios,
                makeup_gain_db=makeup_db,
                knee_width_db=self.knee_width_db,
            )
        return out.astype(np.float32)
