"""Re-score a finished run's HAAQI-Net column with another checkpoint, without recomputing HAAQI.

HAAQI is the expensive part of a run; HAAQI-Net costs milliseconds. When the predictor changes (a new
shipped checkpoint, a student, a fine-tuned model), :func:`rescore_haaqinet` regenerates every ok trial's
processed signal (the processors are deterministic in the trial's seed), predicts it with the new
checkpoint, and replaces the ``haaqinet`` columns of the run's rows. HAAQI scores, failures and every other
column stay as they were.

Safety:

* The run's configuration is rebuilt from ``run.json`` and must hash to the run's config hash, and the
  corpus must have the run's manifest hash; otherwise the audio would not be the run's.
* Each regenerated output's level must match the level recorded in the run (within
  :data:`LEVEL_TOLERANCE_DB`); a trial whose processor no longer gives the same output gets no prediction
  and an error saying so, never a prediction of different audio.
* Progress goes to ``rescore-<checkpoint id>.jsonl`` in the run folder as jobs finish, so an interrupted
  rescore resumes where it stopped. Only when every job is done is the journal rewritten (atomically);
  the previous journal is kept as ``journal.before-rescore-<UTC time>.jsonl``, and ``run.json`` records the
  new checkpoint and the rescore (time, git sha, backup name).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from pathlib import Path

from benchmark.errors import BenchError
from benchmark.store import JOURNAL, RUN_JSON, RunStore, append_jsonl, atomic_write_text, drop_torn_tail, read_jsonl

#: Largest difference between a regenerated output's level and the run's record, in dB.
LEVEL_TOLERANCE_DB = 1e-6


def rescore_haaqinet(run_dir: Path, checkpoint: str, *, executor=None, workers: int = 1,
                     on_start=None, on_rows=None) -> dict:
    """Replace the HAAQI-Net predictions of the run in ``run_dir`` by those of ``checkpoint``.

    Args:
        checkpoint: a path, or ``default``/``student`` (:func:`haaqinet.predict.resolve_checkpoint`).
        executor: where jobs run (:mod:`benchmark.executors`); default a local pool of ``workers``.
        on_start: called with (trials to predict, trials already predicted by an interrupted rescore).
        on_rows: called with the rows of each finished job.

    Returns:
        {"checkpoint", "n_rescored", "n_failed", "n_unchanged", "backup"}: trials with a new
        prediction, ok trials left without one (with the reason in ``haaqinet_error``), rows left as they
        were (failed trials), and the name of the kept journal.
    """
    from benchmark.executors import make_executor
    from benchmark.runner import _checkpoint_provenance, _unfinished, job_inputs, plan_sweep
    from benchmark.sweep import SweepConfig

    store = RunStore(Path(run_dir))
    meta = store.meta()
    config = SweepConfig.from_dict(meta["config"])
    if config.config_hash != meta.get("config_hash"):
        raise BenchError(f"{store.root}: the configuration in {RUN_JSON} hashes to {config.config_hash}, not the "
                         f"run's {meta.get('config_hash')}; it cannot be rebuilt faithfully")
    checkpoint_id = _checkpoint_provenance(checkpoint)
    journal = store.read_journal()
    last = {r["trial_key"]: r for r in journal}  # the row the table keeps
    ok_keys = {k for k, r in last.items() if r.get("status") == "ok"}
    if not ok_keys:
        raise BenchError(f"{store.root} has no successful trials to re-score")
    corpus, clips, plan = plan_sweep(config)
    recorded = meta.get("corpus", {}).get("manifest_hash")
    if recorded and corpus.manifest_hash != recorded:
        raise BenchError(f"corpus {config.corpus!r} has changed since the run (manifest {corpus.manifest_hash}, "
                         f"the run's {recorded}); its audio cannot be regenerated")

    side = store.root / f"rescore-{_safe(checkpoint_id)}.jsonl"
    done = {r["trial_key"]: r for r in read_jsonl(side)}
    skip = (set(done) | ({k for job in plan.jobs for k in job.trial_keys()} - ok_keys))
    todo = _unfinished(plan.jobs, skip)
    if on_start:
        on_start(sum(len(j.trial_keys()) for j in todo), len(done))
    inputs = job_inputs(config, plan, clips, todo, haaqinet_checkpoint=checkpoint, score_haaqi=False)
    executor = executor or make_executor("local", workers=workers)
    keep = ("trial_key", "status", "error", "output_db_spl", "haaqinet", "haaqinet_error", "haaqinet_s")
    drop_torn_tail(side)
    with open(side, "a", encoding="utf-8") as fh:
        for _, rows in executor.run(inputs):
            new = [{k: r.get(k) for k in keep} for r in rows if r["trial_key"] not in done]
            append_jsonl(fh, new)
            done.update((r["trial_key"], r) for r in new)
            if on_rows:
                on_rows(rows)
    missing = ok_keys - set(done)
    if missing:  # an executor that stopped early: keep the partial file, change nothing
        raise BenchError(f"{len(missing)} trials were not re-scored; run the rescore again to finish")
    return _merge(store, meta, journal, done, checkpoint, checkpoint_id, side)


def _merge(store: RunStore, meta: dict, journal: list[dict], done: dict, checkpoint: str, checkpoint_id: str,
           side: Path) -> dict:
    """Write the new predictions into the journal (atomically, keeping the old one) and the table."""
    from benchmark.provenance import git_sha

    counts = {"n_rescored": 0, "n_failed": 0, "n_unchanged": 0}
    rows = []
    for row in journal:
        new = done.get(row["trial_key"]) if row.get("status") == "ok" else None
        if new is None:
            counts["n_unchanged"] += 1
            rows.append(row)
            continue
        row = {**row, "haaqinet_checkpoint": checkpoint_id, "haaqinet_s": new.get("haaqinet_s")}
        reason = _mismatch(row, new)
        if reason:
            row.update(haaqinet=None, haaqinet_error=reason)
        else:
            row.update(haaqinet=new.get("haaqinet"), haaqinet_error=new.get("haaqinet_error") or "")
        counts["n_failed" if row["haaqinet"] is None else "n_rescored"] += 1
        rows.append(row)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    backup = f"journal.before-rescore-{stamp}.jsonl"
    os.link(store.root / JOURNAL, store.root / backup)
    atomic_write_text(store.root / JOURNAL, "".join(json.dumps(r) + "\n" for r in rows))
    history = meta.get("rescored", []) + [{"haaqinet_checkpoint": checkpoint_id, "at": stamp,
                                           "requested": checkpoint, "git_sha": git_sha(),
                                           "journal_before": backup}]
    meta = {**meta, "haaqinet_checkpoint": checkpoint_id, "rescored": history}
    atomic_write_text(store.root / RUN_JSON, json.dumps(meta, indent=2, sort_keys=True, default=str))
    store.write_table()
    side.unlink()
    return {"checkpoint": checkpoint_id, **counts, "backup": backup}


def _mismatch(row: dict, new: dict) -> str:
    """Why a regenerated trial cannot stand for the run's trial ("" when it can)."""
    if new.get("status") != "ok":
        return f"rescore: the processor failed this time: {new.get('error')}"
    old_db, new_db = row.get("output_db_spl"), new.get("output_db_spl")
    if old_db is None or new_db is None or abs(float(old_db) - float(new_db)) > LEVEL_TOLERANCE_DB:
        return (f"rescore: the processed audio differs from the run's (output level {new_db} against "
                f"{old_db} dB SPL); the processor changed since the run")
    return ""


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", text)
