"""NAL-R, a slow AGC and a soft clip: the Cadenza CAD1 baseline hearing aid.

Chain, per ear:

1. NAL-R (:mod:`processors.nalr`), delay ``nfir_taps / 2`` samples, not compensated.
2. pyclarity's AGC (``clarity.enhancer.compressor.Compressor``, run by its
   numba reimplementation :func:`processors.compressors.agc`) with the CAD1 task-1
   settings (``recipes/cad1/task1/baseline/config.yaml``): threshold 0.35,
   attenuation 0.1, attack 50 ms, release 1000 ms, RMS window 0.064 s.
3. ``tanh`` soft clip (CAD1 task 1, ``soft_clip: True``).

Levels. The AGC threshold and the soft clip act on digital full scale, which
in the Cadenza recipes is whatever level the audio file happens to have. Here
the device has a fixed full scale in dB SPL: ``full_scale_db_spl`` is the
level of a digital RMS of 1.0 inside the aid. The input is moved onto that
scale with the trial's calibration, processed, and moved back, so the AGC
and the clip engage at fixed sound levels whatever the file's digital level:

    internal = signal * 10 ** ((calibration.level1_db_spl - full_scale_db_spl) / 20)

With the default 100 dB SPL the AGC engages when the RMS over its 64 ms
window, after NAL-R gain, exceeds 100 + 20 log10(0.35) = 90.9 dB SPL, and the
tanh clip bounds instantaneous values to +-1.0 (a sine cannot exceed 97 dB SPL
RMS at the output). 100 dB SPL is this project's choice, not a Cadenza value
(the recipes work on the files' own digital level): it keeps a 65 dB SPL
input with NAL-R gain mostly linear and limits loud inputs.

Note on pyclarity's AGC: above threshold the target *gain* (not the target
level) is ``threshold + attenuation * (rms - threshold)``, smoothed with the
attack time constant; below threshold the gain relaxes towards 1 with the
release time constant. With the CAD1 values the gain just above threshold is
about 0.35 (-9 dB) and then grows slowly with level, so it acts as a level
switch with about 9 dB of attenuation rather than as a compressor of ratio 10.
It is kept as is because it is the CAD1 baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmark.errors import BenchError
from processors.base import Presentation, Processor
from processors.compressors import agc
from processors.dsp import check_finite_in, db_to_gain, soft_clip
from processors.nalr import apply_nalr, check_nfir_taps


@dataclass(frozen=True)
class NALRAGC(Processor):
    """NAL-R, then a slow AGC, then a tanh soft clip (CAD1 baseline).

    Attributes:
        nfir_taps: NAL-R FIR order in samples (even); delay ``nfir_taps / 2`` samples.
        full_scale_db_spl: dB SPL of a digital RMS of 1.0 inside the aid; the AGC
            threshold and the soft clip are relative to it.
        agc_threshold_rms: AGC threshold as a linear RMS re full scale (CAD1: 0.35).
        agc_attenuation: slope of the AGC gain above threshold, 0..1 (CAD1: 0.1).
        agc_attack_ms: attack time constant in ms (CAD1: 50).
        agc_release_ms: release time constant in ms (CAD1: 1000).
        agc_window_ms: length of the AGC's RMS window in ms (CAD1: 64).
        soft_clip: apply ``tanh`` after the AGC (CAD1: true).
    """

    name = "nalr-agc"
    summary = "CAD1 baseline: NAL-R, slow AGC (pyclarity Compressor), tanh soft clip"

    nfir_taps: int = 220
    full_scale_db_spl: float = 100.0
    agc_threshold_rms: float = 0.35
    agc_attenuation: float = 0.1
    agc_attack_ms: float = 50.0
    agc_release_ms: float = 1000.0
    agc_window_ms: float = 64.0
    soft_clip: bool = True

    def __post_init__(self) -> None:
        check_nfir_taps(self.nfir_taps)
        object.__setattr__(self, "nfir_taps", int(self.nfir_taps))  # numpy ints -> int
        checks = {
            "full_scale_db_spl": (60.0, 140.0),
            "agc_threshold_rms": (1e-4, 10.0),
            "agc_attenuation": (0.0, 1.0),
            # >= 0.1 ms keeps the per-sample smoothing coefficient <= 1 at >= 10 kHz
            "agc_attack_ms": (0.1, 60_000.0),
            "agc_release_ms": (0.1, 60_000.0),
            "agc_window_ms": (0.1, 10_000.0),
        }
        for field, (low, high) in checks.items():
            object.__setattr__(self, field, check_finite_in(getattr(self, field), low, high,
                                                            what=field))
        if not isinstance(self.soft_clip, (bool, np.bool_)):
            raise BenchError(f"soft_clip must be true or false, got {self.soft_clip!r}")
        object.__setattr__(self, "soft_clip", bool(self.soft_clip))

    def process(self, signal: np.ndarray, presentation: Presentation, *,
                rng: np.random.Generator) -> np.ndarray:
        aided = apply_nalr(signal, presentation, self.nfir_taps)
        # digital -> device scale (RMS 1.0 == full_scale_db_spl) and back
        to_device = float(db_to_gain(presentation.calibration.level1_db_spl
                                     - self.full_scale_db_spl))
        out = np.empty_like(aided)
        for i, channel in enumerate(aided):
            y = agc(
                channel * to_device,
                sample_rate_hz=float(presentation.sample_rate_hz),
                threshold=self.agc_threshold_rms,
                attenuation=self.agc_attenuation,
                attack_ms=self.agc_attack_ms,
                release_ms=self.agc_release_ms,
                rms_window_s=self.agc_window_ms / 1000.0,
            )
            out[i] = (soft_clip(y) if self.soft_clip else y) / to_device
        return out.astype(np.float32)
