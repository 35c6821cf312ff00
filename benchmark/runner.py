"""The sweep runner: config -> trials -> rows in the results store.

:func:`run_sweep` loads the corpus, expands the config into jobs, skips the
trials already in the run's journal (resume), runs the rest on an executor,
and appends every row to the journal as it arrives. Progress goes to an
optional callback; the library never prints.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmark.errors import BenchError
from benchmark.provenance import git_sha, package_versions, run_provenance
from benchmark.store import RunStore
from benchmark.sweep import SweepConfig, plan_jobs
from benchmark.trial import JobInput

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a call to :func:`run_sweep` did."""

    run_dir: Path
    n_trials: int
    n_skipped: int
    n_ok: int = 0
    n_error: int = 0
    wall_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    table: pd.DataFrame | None = None

    @property
    def trials_per_minute(self) -> float:
        done = self.n_ok + self.n_error
        return 60.0 * done / self.wall_s if self.wall_s > 0 else 0.0


def default_run_id(config: SweepConfig) -> str:
    """``<processors>-<config hash>``: the same command finds the same folder (resume)."""
    names = "+".join(sorted({p.name.rsplit(":", 1)[-1].replace("/", "_").replace(">", "_")
                             for p in config.processors}))
    if len(names) > 40:
        names = f"{len(config.processors)}procs"
    return f"{names}-{config.config_hash}"


def run_sweep(
    config: SweepConfig,
    *,
    results_dir: str | Path = "results",
    run_id: str | None = None,
    workers: int = 1,
    retry_errors: bool = False,
    executor=None,
    on_start: Callable[[int, int], None] | None = None,
    on_rows: Callable[[list[dict]], None] | None = None,
    command: str | None = None,
) -> RunSummary:
    """Run (or resume) a sweep.

    Args:
        config: the sweep.
        results_dir: parent folder of run folders.
        run_id: run folder name; default :func:`default_run_id`.
        workers: 0 = in-process, N = local pool of N processes (ignored if ``executor``).
        retry_errors: rerun trials whose earlier row is an error.
        executor: an executor object (see :mod:`benchmark.executors`).
        on_start: called with (trials to run, trials skipped) before work starts.
        on_rows: called with the rows of each finished job.
        command: the command line that started the run, recorded in run.json.
    """
    from benchmark.executors import make_executor

    checkpoint_id = _checkpoint_provenance(config.haaqinet_checkpoint)  # fails before any work
    corpus, clips, plan = plan_sweep(config)

    store = RunStore(Path(results_dir) / (run_id or default_run_id(config)))
    meta = {
        "config": config.as_dict(),
        "config_hash": config.config_hash,
        "corpus": {"name": corpus.name, "root": str(corpus.root), "n_clips": len(clips),
                   "manifest_hash": corpus.manifest_hash,
                   "skipped": [list(s) for s in corpus.skipped]},
        "processors": {pid: {"name": p.name, "label": p.label, "params": p.params()}
                       for pid, p in plan.processors.items()},
        "haaqinet_checkpoint": checkpoint_id,
        "command": command,
        **run_provenance(),
    }
    store.prepare(meta)  # checks the folder is writable and has space, before any work

    journal = store.read_journal()
    todo = _unfinished(plan.jobs, store.finished_keys(retry_errors=retry_errors, rows=journal))
    backend_version = _backend_version(config.haaqi_backend)
    if todo:
        _check_same_scorers(store.root, journal, backend_version, checkpoint_id)
    n_trials = sum(len(j.trial_keys()) for j in plan.jobs)
    summary = RunSummary(store.root, n_trials=n_trials,
                         n_skipped=n_trials - sum(len(j.trial_keys()) for j in todo))
    if on_start:
        on_start(n_trials - summary.n_skipped, summary.n_skipped)

    provenance = {
        "run_id": store.root.name, "config_hash": config.config_hash,
        "corpus": corpus.name, "corpus_manifest_hash": corpus.manifest_hash,
        "git_sha": git_sha(), "bench_version": package_versions()["haaqi-bench"],
        "versions": ",".join(f"{k}={v}" for k, v in sorted(package_versions().items())),
    }
    provenance["haaqinet_checkpoint"] = checkpoint_id
    inputs = job_inputs(config, plan, clips, todo, haaqinet_checkpoint=config.haaqinet_checkpoint)
    executor = executor or make_executor("local", workers=workers)
    started = time.perf_counter()
    try:
        for inp, rows in executor.run(inputs):
            for row in rows:
                row.update(provenance, haaqi_backend_version=backend_version,
                           processor_label=plan.processors[row["processor_id"]].label)
                if row["status"] == "ok":
                    summary.n_ok += 1
                else:
                    summary.n_error += 1
                    summary.errors.append(f"{row['trial_key']}: {row['error']}")
            store.append(rows)
            if on_rows:
                on_rows(rows)
    finally:
        summary.wall_s = time.perf_counter() - started
        store.close()
        summary.table = store.write_table()
    return summary


def plan_sweep(config: SweepConfig):
    """The corpus, the selected clips and the planned jobs of ``config``: (corpus, clips, plan)."""
    from benchmark.corpus import load_corpus

    corpus = load_corpus(config.corpus, excerpt_s=config.excerpt_s)
    clips = select_clips(list(corpus.clips), config.clip_ids)
    clips = clips[: config.limit_clips] if config.limit_clips else clips
    return corpus, clips, plan_jobs(config, [c.clip_id for c in clips])


def job_inputs(config: SweepConfig, plan, clips: list, jobs, *, haaqinet_checkpoint: str | None,
               score_haaqi: bool = True):
    """A lazy :class:`JobInput` for each of ``jobs`` (jobs of ``plan``, possibly restricted)."""
    clips_by_id = {c.clip_id: c for c in clips}
    listeners = {ls.name: ls for ls in config.listeners}
    spec_by_id = dict(zip(plan.processors, config.processors))
    return (JobInput(job, clips_by_id[job.clip_id], listeners[job.listener],
                     tuple(spec_by_id[p] for p in job.processor_ids), config.reference,
                     config.haaqi_backend, haaqinet_checkpoint, score_haaqi=score_haaqi)
            for job in jobs)


def select_clips(clips: list, clip_ids) -> list:
    """The clips named in ``clip_ids`` (in that order), or all of them when it is None."""
    if clip_ids is None:
        return clips
    from benchmark.registry_util import did_you_mean

    by_id = {c.clip_id: c for c in clips}
    unknown = [c for c in clip_ids if c not in by_id]
    if unknown:
        raise BenchError(f"no clip {unknown[0]!r} in the corpus{did_you_mean(unknown[0], list(by_id))}; "
                         "the clip ids are the corpus manifest's clip_id column")
    return [by_id[c] for c in clip_ids]


def _check_same_scorers(root: Path, journal: list[dict], backend_version: str, checkpoint_id: str) -> None:
    """Refuse to add rows scored by another HAAQI version or another HAAQI-Net checkpoint to a run (its rows
    would not compare)."""
    ok = [r for r in journal if r.get("status") == "ok"]
    old = {r.get("haaqi_backend_version") for r in ok} - {None}
    if old and old != {backend_version}:
        raise BenchError(
            f"{root} was scored with HAAQI {', '.join(sorted(old))}, but this installation has "
            f"{backend_version}; finish it with that version, or start a new run (--run-id)")
    old = {r.get("haaqinet_checkpoint") for r in ok} - {None, ""}
    if checkpoint_id and old and old != {checkpoint_id}:
        raise BenchError(
            f"{root} was scored with HAAQI-Net {', '.join(sorted(old))}, but this run asks for {checkpoint_id}; "
            "finish it with that checkpoint (--haaqinet-checkpoint PATH), then re-score it with "
            "`bench rescore`, or start a new run (--run-id)")


def _unfinished(jobs, finished: set[str]) -> list:
    """Jobs restricted to the processors that still have unfinished trials."""
    todo = []
    for job in jobs:
        pids = [p for p in job.processor_ids
                if not all(k in finished for k in job.only([p]).trial_keys())]
        if pids:
            todo.append(job.only(pids))
    return todo


def _checkpoint_provenance(checkpoint: str | None) -> str:
    """``name@sha256[:12]`` of the HAAQI-Net checkpoint used, or "" when off."""
    if not checkpoint:
        return ""
    import hashlib

    from haaqinet.predict import resolve_checkpoint

    path = resolve_checkpoint(checkpoint)  # a path, or a name: default, teacher, student, ensemble
    if not path.is_file():
        from benchmark.errors import BenchError

        raise BenchError(f"HAAQI-Net checkpoint not found: {path} (or run with --no-haaqinet)")
    return f"{path.name}@{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"


def _backend_version(name: str) -> str:
    from benchmark import haaqi

    return haaqi.backend_version(name)
