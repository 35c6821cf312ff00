"""One table from several runs: rank or plot processors that were run apart.

A trial's scores depend only on the trial (clip, listener, ear, SPL, listening
condition, processor configuration) and the seeds derived from it, never on the
other processors of its run (:meth:`benchmark.sweep.Job.processor_seed`,
:meth:`benchmark.sweep.Job.haaqi_seed`). So a new processor, run alone, can be
ranked beside a baseline run without rerunning the baselines, provided both
runs judged the same trials in the same way. :func:`load_runs` checks that and
refuses otherwise, saying what differs:

* the sweep settings that change what a trial hears or how it is judged
  (run.json: excerpt length, the listeners' audiograms, reference convention,
  HAAQI backend);
* the per-row provenance (corpus manifest, HAAQI backend version, HAAQI-Net
  checkpoint);
* the trial grid: the same clips, listeners, ears, SPLs and conditions;
* a processor configuration in several runs must have the same status and
  HAAQI on every trial, within :data:`SAME_SCORE_TOLERANCE` (runs made on CPUs
  of other families can differ in the last bits, ``docs/cluster.md``); the
  first run's rows are kept.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.errors import BenchError
from benchmark.leaderboard import TRIAL_COLUMNS
from benchmark.store import RUN_JSON, RunStore, load_table

#: Largest HAAQI difference between two runs' rows of one trial that counts as the same score: the same
#: code on CPUs of other families differs by up to about 2e-10 (numba's vectorisation follows the CPU).
SAME_SCORE_TOLERANCE = 1e-6
#: run.json settings that must agree (the corpus is compared by its manifest hash instead).
SHARED_SETTINGS = ("excerpt_s", "listeners", "reference", "haaqi_backend")
#: Table columns that must hold the same values in every run.
SHARED_COLUMNS = ("corpus_manifest_hash", "reference", "equalisation", "haaqi_backend_version",
                  "haaqinet_checkpoint")
_HINTS = {
    "haaqinet_checkpoint": " (`bench rescore <run> --haaqinet-checkpoint ...` re-predicts one of them)",
    "haaqi_backend_version": " (rerun one of them with the same haaqi-bench version)",
    "corpus_manifest_hash": " (the corpus files differ)",
}


def load_runs(run_dirs) -> tuple[pd.DataFrame, list[str]]:
    """The results table of one run, or of several runs merged; and the runs' ``bench run`` commands.

    Raises:
        BenchError: a folder is missing or given twice, or the runs cannot be ranked together.
    """
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise BenchError("no run folder given")
    resolved = [d.resolve() for d in dirs]
    if len(set(resolved)) != len(resolved):
        raise BenchError("a run folder is given twice")
    tables = [load_table(d) for d in dirs]
    metas = [RunStore(d).meta() if (d / RUN_JSON).exists() else None for d in dirs]
    commands = [c for d, m in zip(dirs, metas) if m for c in made_by(d, m)]
    if len(dirs) == 1:
        return tables[0], commands
    names = [d.name for d in dirs]
    missing = [n for n, m in zip(names, metas) if m is None]
    if missing:
        raise BenchError(f"cannot rank runs together without their {RUN_JSON}: {', '.join(missing)}")
    _check_settings(names, [m.get("config", {}) for m in metas])
    _check_columns(names, tables)
    _check_grid(names, tables)
    return _union(names, tables), commands


def made_by(run_dir: Path, meta: dict) -> list[str]:
    """The commands that made a run's table, from its run.json: ``bench run``, then each ``bench rescore``.

    A re-prediction is shown as a shell comment (when, which checkpoint, git sha) and, where run.json
    records the checkpoint as the user gave it, the command that repeats it.
    """
    out = [meta["command"]] if meta.get("command") else []
    for entry in meta.get("rescored", []):
        sha = (entry.get("git_sha") or "?")[:12]
        out.append(f"# HAAQI-Net re-predicted at {entry.get('at', '?')} with {entry.get('haaqinet_checkpoint')} "
                   f"(git {sha}); the earlier journal is {entry.get('journal_before', '?')}")
        if entry.get("requested"):
            where = "" if str(run_dir.parent) == "results" else f" --results {run_dir.parent}"
            out.append(f"bench rescore {run_dir.name}{where} --haaqinet-checkpoint {entry['requested']}")
    return out


def _check_settings(names: list[str], configs: list[dict]) -> None:
    for key in SHARED_SETTINGS:
        values = [json.dumps(c.get(key), sort_keys=True) for c in configs]
        if len(set(values)) > 1:
            shown = "; ".join(f"{n}: {_short(v)}" for n, v in zip(names, values))
            raise BenchError(f"the runs differ in their sweep setting {key!r} ({shown}), so their trials "
                             "are not the same; rank runs made with the same settings")


def _check_columns(names: list[str], tables: list[pd.DataFrame]) -> None:
    for col in SHARED_COLUMNS:
        values = [tuple(sorted(map(str, t[col].dropna().unique()))) if col in t else () for t in tables]
        if len(set(values)) > 1:
            shown = "; ".join(f"{n}: {', '.join(v) or 'none'}" for n, v in zip(names, values))
            raise BenchError(f"the runs differ in {col} ({shown}){_HINTS.get(col, '')}")


def _grid(table: pd.DataFrame) -> set[tuple]:
    cols = [c for c in TRIAL_COLUMNS if c in table]
    return {tuple(map(_text, row)) for row in table[cols].itertuples(index=False, name=None)}


def _text(value) -> str:
    """A grid value as text: missing values alike (None, NaN), numbers without their dtype (65 == 65.0)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (int, float, np.integer, np.floating)):
        return f"{float(value):g}"
    return str(value)


def _check_grid(names: list[str], tables: list[pd.DataFrame]) -> None:
    first = _grid(tables[0])
    for name, table in zip(names[1:], tables[1:]):
        grid = _grid(table)
        if grid != first:
            only_a, only_b = sorted(first - grid), sorted(grid - first)
            example = "|".join(v for v in (only_a or only_b)[0] if v)
            raise BenchError(f"runs {names[0]} and {name} judged different trials: {len(only_a)} trial "
                             f"conditions only in {names[0]}, {len(only_b)} only in {name} (e.g. {example}); "
                             "rank runs over the same clips, listeners, ears, SPLs and conditions")


def _union(names: list[str], tables: list[pd.DataFrame]) -> pd.DataFrame:
    kept: list[pd.DataFrame] = []
    seen: dict[str, tuple[str, pd.DataFrame]] = {}     # processor_id -> (run, its rows)
    for name, table in zip(names, tables):
        for pid, rows in table.groupby("processor_id", sort=False):
            if pid in seen:
                _check_same_scores(pid, *seen[pid], name, rows)
                continue
            seen[pid] = (name, rows)
            kept.append(rows)
    merged = pd.concat(kept, ignore_index=True)
    return merged.sort_values("trial_key", kind="stable").reset_index(drop=True)


def _check_same_scores(pid: str, name_a: str, a: pd.DataFrame, name_b: str, b: pd.DataFrame) -> None:
    a, b = a.set_index("trial_key"), b.set_index("trial_key")
    if set(a.index) != set(b.index):
        raise BenchError(f"processor {pid} has different trials in {name_a} and {name_b}")
    b = b.loc[a.index]
    same_status = (a["status"].to_numpy() == b["status"].to_numpy())
    ha, hb = a["haaqi"].to_numpy(dtype=float), b["haaqi"].to_numpy(dtype=float)
    same_score = (np.abs(ha - hb) <= SAME_SCORE_TOLERANCE) | (np.isnan(ha) & np.isnan(hb))
    bad = ~(same_status & same_score)
    if bad.any():
        diff = np.abs(ha - hb)[bad & ~np.isnan(ha - hb)]
        largest = f", largest HAAQI difference {diff.max():.3g}" if diff.size else ""
        raise BenchError(f"processor {pid} is in {name_a} and {name_b} with different results on "
                         f"{int(bad.sum())} of {bad.size} trials{largest}: were the runs made with different code?")


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[:n - 3] + "..."
