"""Run one job: processed audio -> HAAQI scores -> result rows.

:func:`run_job` is pure given its inputs: the same :class:`JobInput` gives
bit-identical rows (apart from timing columns) in any process. A failure in
any stage becomes one row per affected (processor, ear) with
``status="error"``, the stage and the message, and no score; the other
processors of the job are still scored. Nothing here writes files.

In a noisy condition (docs/conventions.md, "Noisy scenarios") the clean
excerpt is mixed with its background noise at the condition's SNR, the
*mixture* is calibrated to the SPL and processed, and the HAAQI reference is
the clean excerpt at the mixture's digital scale (the music component of what
the listener hears), through the reference convention.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from benchmark.audiogram import Audiogram, Listener
from benchmark.calibration import Calibration, calibrate
from benchmark.sweep import EARS, REFERENCE_CONVENTIONS, Condition, Job, ProcessorSpec, trial_key

#: HAAQI score columns, in table order.
SCORE_COLUMNS = ("haaqi", "haaqi_nonlinear", "haaqi_linear", "cep_high", "bm_sync5", "d_loud",
                 "d_norm")


@dataclass(frozen=True)
class JobInput:
    """Everything a worker needs for one job; picklable.

    ``processors[i]`` is the spec of ``job.processor_ids[i]``. With ``score_haaqi`` False the job
    processes and predicts with HAAQI-Net only (rows without HAAQI scores; ``bench rescore``).
    """

    job: Job
    clip: object  # benchmark.corpus.Clip
    listener: Listener
    processors: tuple[ProcessorSpec, ...]
    reference: str
    haaqi_backend: str
    haaqinet_checkpoint: str | None = None
    score_haaqi: bool = True


@lru_cache(maxsize=2)
def _predictor(checkpoint: str):
    """A HAAQI-Net predictor, loaded once per worker process (one torch thread)."""
    import torch

    from haaqinet.predict import Predictor

    torch.set_num_threads(1)
    return Predictor(None if checkpoint == "default" else checkpoint)


def _haaqinet(inp: JobInput, outputs: dict, rate: int, calibration: Calibration, music: np.ndarray) -> dict:
    """(processor id, ear) -> HAAQI-Net prediction or exception, all in one batched call.

    ``music``: the clean excerpt's channels of the job's ears; each ear's level in dB SPL is the network's
    ``input_spl_db`` (the level of the music presented to the hearing aid, HAAQI's reference level).
    """
    if not inp.haaqinet_checkpoint or not outputs:
        return {}
    keys = [(p, ear) for p in outputs for ear in inp.job.ears]
    try:
        from haaqinet.predict import to_16k

        predictor = _predictor(inp.haaqinet_checkpoint)
        music_db_spl = [calibration.db_spl(channel) for channel in music]  # one per ear, shared by the processors
        signals, audiograms, levels, input_levels = [], [], [], []
        for pid, ear in keys:
            ch = inp.job.ears.index(ear)
            channel = outputs[pid][0][ch]
            signals.append(to_16k(channel[None, :], rate)[0])
            audiograms.append(inp.listener.ear(ear))
            levels.append(calibration.db_spl(channel))
            input_levels.append(music_db_spl[ch])
        return dict(zip(keys, predictor.predict_signals(signals, audiograms, levels, input_levels)))
    except Exception as exc:  # HAAQI-Net failing never hides the HAAQI score
        return {k: exc for k in keys}


@lru_cache(maxsize=4)
def _excerpt(clip):
    from benchmark.corpus import load_excerpt

    return load_excerpt(clip)


@lru_cache(maxsize=4)
def _noise(clip, noise: str, seed: int, shape: tuple[int, int], sample_rate_hz: int) -> np.ndarray:
    """The clip's background noise of one type (float64, ``shape``), shared by every SNR."""
    from benchmark.noise import make_noise

    return make_noise(noise, shape[1], sample_rate_hz, n_channels=shape[0],
                      rng=np.random.default_rng(seed))


def listening_signals(clean: np.ndarray, rate: int, job: Job, clip=None) -> tuple[np.ndarray, Calibration]:
    """What the hearing aid receives in the job's condition, and the trial's calibration.

    Clean: the excerpt, calibrated so that it is at the SPL. Noisy: the
    excerpt plus its noise at the SNR (over both channels), calibrated so
    that the *mixture* is at the SPL; the clean excerpt keeps its digital
    values, so with the same calibration it is the music component.

    Args:
        clean: float32 (n_channels, n_samples), the clean excerpt.
        clip: the clip (a cache key for its noise); None: no caching.
    """
    condition: Condition = job.condition
    if condition.is_clean:
        return clean, calibrate(clean, job.spl_db)
    from benchmark.noise import make_noise, mix_at_snr

    if clip is None:
        noise = make_noise(condition.noise, clean.shape[1], rate, n_channels=clean.shape[0],
                           rng=np.random.default_rng(job.noise_seed))
    else:
        noise = _noise(clip, condition.noise, job.noise_seed, clean.shape, rate)
    mixture, _ = mix_at_snr(clean, noise, condition.snr_db)
    return mixture, calibrate(mixture, job.spl_db)


@lru_cache(maxsize=32)
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
    from processors.base import Presentation

    presentation = Presentation(sample_rate_hz, Listener("ref", ear_audiogram, ear_audiogram),
                                Calibration(0.0), ("left",))
    nalr = _processor(ProcessorSpec("nalr"))
    return nalr.process(clean[None, :], presentation, rng=np.random.default_rng(0))[0]


def _row(inp: JobInput, processor_id: str, ear: str) -> dict:
    job = inp.job
    audiogram = inp.listener.ear(ear)
    spec = inp.processors[job.processor_ids.index(processor_id)]
    condition = job.condition
    row = {
        "trial_key": trial_key(job.clip_id, job.listener, ear, job.spl_db, processor_id, condition),
        "clip_id": job.clip_id,
        "instrumentation": getattr(inp.clip, "instrumentation", "unknown"),
        "listener": job.listener,
        "ear": ear,
        "audiogram": audiogram.name,
        "pta_db_hl": audiogram.pta_db_hl,
        "severity": audiogram.severity,
        "spl_db": job.spl_db,
        "scenario": condition.scenario,
        "noise": condition.noise,
        "snr_db": float("nan") if condition.snr_db is None else condition.snr_db,
        "processor_id": processor_id,
        "processor": spec.name,
        "reference": inp.reference,
        "equalisation": REFERENCE_CONVENTIONS[inp.reference][1],
        "haaqi_backend": inp.haaqi_backend,
        "seed_processor": job.processor_seed(processor_id),
        "seed_haaqi": job.haaqi_seed(ear),
        "worker_pid": os.getpid(),
    }
    if not condition.is_clean:
        row["seed_noise"] = job.noise_seed
    return row


def _fail(row: dict, stage: str, exc: BaseException, started: float) -> dict:
    row.update(status="error", error_stage=stage, error=f"{type(exc).__name__}: {exc}",
               seconds=time.perf_counter() - started, finished_at=_now())
    return row


def error_rows(inp: JobInput, stage: str, exc: BaseException, started: float) -> list[dict]:
    """Error rows for every trial of a job (a failure before any processor ran)."""
    return [_fail(_row(inp, pid, ear), stage, exc, started)
            for pid in inp.job.processor_ids for ear in inp.job.ears]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _process_all(inp: JobInput, x: np.ndarray, presentation) -> dict:
    """processor id -> (output float32 (n_ch, n), seconds) or the exception it raised."""
    from processors.base import check_output

    outputs = {}
    for pid, spec in zip(inp.job.processor_ids, inp.processors):
        t0 = time.perf_counter()
        try:
            processor = _processor(spec)
            rng = np.random.default_rng(inp.job.processor_seed(pid))
            out = check_output(processor.process(x.copy(), presentation, rng=rng), x)
            outputs[pid] = (out, time.perf_counter() - t0)
        except Exception as exc:  # a failure is a row, never a score
            outputs[pid] = exc.with_traceback(None)  # free the plugin's frames (and memory) now
    return outputs


def _score_ear(inp: JobInput, ref: np.ndarray, outs: dict, ch: int, rate: int,
               calibration: Calibration, ear: str) -> dict:
    """processor id -> HaaqiScore or exception, for the processors that produced output."""
    from benchmark import haaqi

    audiogram = inp.listener.ear(ear)
    kwargs = dict(sample_rate_hz=rate, audiogram=audiogram,
                  level1_db_spl=calibration.level1_db_spl,
                  equalisation=REFERENCE_CONVENTIONS[inp.reference][1],
                  seed=inp.job.haaqi_seed(ear), backend=inp.haaqi_backend)
    pids = list(outs)
    try:
        results = haaqi.score_many(ref, [outs[p][0][ch] for p in pids], **kwargs)
        return dict(zip(pids, results))
    except Exception:  # isolate the failing pair(s); same seed, so same scores
        scored = {}
        for p in pids:
            try:
                scored[p] = haaqi.score(ref, outs[p][0][ch], **kwargs)
            except Exception as exc:
                scored[p] = exc
        return scored


def _add_prediction(row: dict, prediction, seconds: float) -> None:
    if prediction is None:
        return
    if isinstance(prediction, Exception):
        row.update(haaqinet=None, haaqinet_error=f"{type(prediction).__name__}: {prediction}")
    else:
        row.update(haaqinet=float(prediction), haaqinet_error="", haaqinet_s=seconds)


def run_job(inp: JobInput) -> list[dict]:
    """Process one clip through every processor of the job and score every ear."""
    from processors.base import Presentation, check_signal

    started = time.perf_counter()
    job = inp.job
    try:
        clean, rate = _excerpt(inp.clip)
        check_signal(clean, what=f"clip {job.clip_id}")
    except Exception as exc:
        return error_rows(inp, "load", exc, started)
    try:
        heard, calibration = listening_signals(clean, rate, job, inp.clip)
    except Exception as exc:
        return error_rows(inp, "load" if job.condition.is_clean else "noise", exc, started)
    channels = [EARS.index(e) for e in job.ears]
    x = heard[channels] if channels != [0, 1] else heard
    music = clean[channels] if channels != [0, 1] else clean  # the reference's source
    presentation = Presentation(rate, inp.listener, calibration, tuple(job.ears))
    processed = _process_all(inp, x, presentation)
    ok_outputs = {p: v for p, v in processed.items() if not isinstance(v, Exception)}
    t0 = time.perf_counter()
    predictions = _haaqinet(inp, ok_outputs, rate, calibration, music)
    haaqinet_s = (time.perf_counter() - t0) / max(1, len(predictions))

    if not inp.score_haaqi:
        return _prediction_rows(inp, processed, predictions, haaqinet_s, calibration, started)
    rows = {}
    for ch, ear in enumerate(job.ears):
        t0 = time.perf_counter()
        try:
            ref = reference_signal(music[ch], ear_audiogram=inp.listener.ear(ear), sample_rate_hz=rate,
                                   reference=inp.reference)
            scores = _score_ear(inp, ref, ok_outputs, ch, rate, calibration, ear) if ok_outputs else {}
        except Exception as exc:
            scores = {p: exc for p in ok_outputs}
        haaqi_s = (time.perf_counter() - t0) / max(1, len(ok_outputs))
        for pid in job.processor_ids:
            row = _row(inp, pid, ear)
            if isinstance(processed[pid], Exception):
                rows[(pid, ear)] = _fail(row, "process", processed[pid], started)
            elif isinstance(scores.get(pid), Exception):
                rows[(pid, ear)] = _fail(row, "haaqi", scores[pid], started)
            else:
                values = scores[pid].as_dict()
                row.update({
                    "haaqi": values["haaqi"], "haaqi_nonlinear": values["nonlinear"],
                    "haaqi_linear": values["linear"], "cep_high": values["cep_high"],
                    "bm_sync5": values["bm_sync5"], "d_loud": values["d_loud"],
                    "d_norm": values["d_norm"],
                    **_ok_fields(processed[pid], ch, calibration, started, haaqi_s=haaqi_s),
                })
                _add_prediction(row, predictions.get((pid, ear)), haaqinet_s)
                rows[(pid, ear)] = row
    peak = _peak_rss_mib()
    for row in rows.values():
        row["worker_peak_rss_mib"] = peak
    return [rows[(pid, ear)] for pid in job.processor_ids for ear in job.ears]


def _ok_fields(output, ch: int, calibration: Calibration, started: float, haaqi_s: float | None = None) -> dict:
    """The columns of a successful trial besides its scores, in table order; ``output`` is (signal, process_s)."""
    out, process_s = output
    timing = {"process_s": process_s} if haaqi_s is None else {"process_s": process_s, "haaqi_s": haaqi_s}
    return {"status": "ok", "error_stage": "", "error": "", "level1_db_spl": calibration.level1_db_spl,
            "output_db_spl": calibration.db_spl(out[ch]), **timing,
            "seconds": time.perf_counter() - started, "finished_at": _now()}


def _prediction_rows(inp: JobInput, processed: dict, predictions: dict, haaqinet_s: float,
                     calibration: Calibration, started: float) -> list[dict]:
    """Rows of a job run without HAAQI: the output level and the HAAQI-Net prediction of each trial."""
    rows = []
    for pid in inp.job.processor_ids:
        for ch, ear in enumerate(inp.job.ears):
            row = _row(inp, pid, ear)
            if isinstance(processed[pid], Exception):
                rows.append(_fail(row, "process", processed[pid], started))
                continue
            row.update(_ok_fields(processed[pid], ch, calibration, started))
            _add_prediction(row, predictions.get((pid, ear)), haaqinet_s)
            rows.append(row)
    return rows


def _peak_rss_mib() -> float:
    """Peak resident memory of this (worker) process so far, in MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
