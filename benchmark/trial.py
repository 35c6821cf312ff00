"""Run one job: processed audio -> HAAQI scores -> result rows.

:func:`run_job` is pure given its inputs: the same :class:`JobInput` gives
bit-identical rows (apart from timing columns) in any process. A failure in
any stage becomes a row per ear with ``status="error"``, the stage and the
message, and no score. Nothing here writes files.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
import traceback
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from benchmark.audiogram import Audiogram, Listener
from benchmark.calibration import calibrate
from benchmark.sweep import REFERENCE_CONVENTIONS, Job, ProcessorSpec, trial_key

#: HAAQI score columns, in table order.
SCORE_COLUMNS = ("haaqi", "haaqi_nonlinear", "haaqi_linear", "cep_high", "bm_sync5", "d_loud",
                 "d_norm")


@dataclass(frozen=True)
class JobInput:
    """Everything a worker needs for one job; picklable."""

    job: Job
    clip: object  # benchmark.corpus.Clip
    listener: Listener
    processor: ProcessorSpec
    reference: str
    haaqi_backend: str


@lru_cache(maxsize=8)
def _excerpt(clip):
    from benchmark.corpus import load_excerpt

    return load_excerpt(clip)


@lru_cache(maxsize=16)
def _processor(spec: ProcessorSpec):
    return spec.create()


def reference_signal(clean: np.ndarray, *, ear_audiogram: Audiogram, sample_rate_hz: int,
                     reference: str) -> np.ndarray:
    """The HAAQI reference for one ear under a reference convention.

    Args:
        clean: float32, shape (n_samples,), the clean excerpt of that ear's channel.
        reference: "nalr" (NAL-R for the ear, the Cadenza convention) or "clean".
    """
    if reference == "clean":
        return clean
    from benchmark.calibration import Calibration
    from processors.base import Presentation

    presentation = Presentation(sample_rate_hz, Listener("ref", ear_audiogram, ear_audiogram),
                                Calibration(0.0), ("left",))
    nalr = _processor(ProcessorSpec("nalr"))
    return nalr.process(clean[None, :], presentation, rng=np.random.default_rng(0))[0]


def _base_row(inp: JobInput, ear: str) -> dict:
    job = inp.job
    audiogram = inp.listener.ear(ear)
    return {
        "trial_key": trial_key(job.clip_id, job.listener, ear, job.spl_db, job.processor_id),
        "clip_id": job.clip_id,
        "instrumentation": getattr(inp.clip, "instrumentation", "unknown"),
        "listener": job.listener,
        "ear": ear,
        "audiogram": audiogram.name,
        "pta_db_hl": audiogram.pta_db_hl,
        "severity": audiogram.severity,
        "spl_db": job.spl_db,
        "processor_id": job.processor_id,
        "processor": inp.processor.name,
        "reference": inp.reference,
        "equalisation": REFERENCE_CONVENTIONS[inp.reference][1],
        "haaqi_backend": inp.haaqi_backend,
        "seed_processor": job.processor_seed,
        "seed_haaqi": job.haaqi_seed(ear),
        "worker_pid": os.getpid(),
    }


def error_rows(inp: JobInput, stage: str, exc: BaseException, started: float) -> list[dict]:
    message = f"{type(exc).__name__}: {exc}"
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    rows = []
    for ear in inp.job.ears:
        row = _base_row(inp, ear)
        row.update(status="error", error_stage=stage, error=message or detail,
                   seconds=time.perf_counter() - started, finished_at=_now())
        rows.append(row)
    return rows


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def run_job(inp: JobInput) -> list[dict]:
    """Process one clip and score every ear; never raises for a bad processor or signal."""
    from benchmark import haaqi
    from processors.base import Presentation, check_output, check_signal

    started = time.perf_counter()
    job = inp.job
    stage = "load"
    try:
        clean, rate = _excerpt(inp.clip)
        check_signal(clean, what=f"clip {job.clip_id}")
        calibration = calibrate(clean, job.spl_db)
        stage = "process"
        processor = _processor(inp.processor)
        presentation = Presentation(rate, inp.listener, calibration, tuple(job.ears))
        x = clean[[("left", "right").index(e) for e in job.ears]] if len(job.ears) != 2 else clean
        t0 = time.perf_counter()
        out = processor.process(x.copy(), presentation, rng=np.random.default_rng(job.processor_seed))
        out = check_output(out, x)
        process_s = time.perf_counter() - t0
    except Exception as exc:  # a failure is a row, never a score
        return error_rows(inp, stage, exc, started)

    rows = []
    for ch, ear in enumerate(job.ears):
        row = _base_row(inp, ear)
        try:
            audiogram = inp.listener.ear(ear)
            ref = reference_signal(x[ch], ear_audiogram=audiogram, sample_rate_hz=rate,
                                   reference=inp.reference)
            t0 = time.perf_counter()
            result = haaqi.score(ref, out[ch], sample_rate_hz=rate, audiogram=audiogram,
                                 level1_db_spl=calibration.level1_db_spl,
                                 equalisation=row["equalisation"], seed=row["seed_haaqi"],
                                 backend=inp.haaqi_backend)
            values = result.as_dict()
            row.update({
                "haaqi": values["haaqi"], "haaqi_nonlinear": values["nonlinear"],
                "haaqi_linear": values["linear"], "cep_high": values["cep_high"],
                "bm_sync5": values["bm_sync5"], "d_loud": values["d_loud"],
                "d_norm": values["d_norm"],
                "status": "ok", "error_stage": "", "error": "",
                "level1_db_spl": calibration.level1_db_spl,
                "output_db_spl": calibration.db_spl(out[ch]),
                "process_s": process_s, "haaqi_s": time.perf_counter() - t0,
            })
        except Exception as exc:
            row.update(status="error", error_stage="haaqi", error=f"{type(exc).__name__}: {exc}")
        row.update(seconds=time.perf_counter() - started, finished_at=_now())
        rows.append(row)
    return rows
