"""The results store: ``results/<run-id>/``, crash-safe and resumable.

Layout of a run folder:

* ``run.json``: the sweep config, its hash, the corpus manifest hash and the
  provenance (package versions, git sha, host, start time).
* ``journal.jsonl``: one JSON row per finished trial, appended and flushed by
  the main process only, as results arrive. This is the source of truth: a
  SIGKILL can at worst leave a torn last line, which is ignored on reading.
* ``scores.parquet`` and ``scores.csv``: the tidy table (one row per trial),
  rewritten atomically from the journal at the end of a run and whenever a
  run resumes. Readable with ``pandas.read_parquet``.

If the journal holds several rows for one trial (an error retried with
``--retry-errors``), the table keeps the last. Rows written before noisy
scenarios existed have no ``scenario``/``noise`` values; in a table that has
those columns they read as ``clean``/``none``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd

from benchmark.errors import BenchError

JOURNAL = "journal.jsonl"
RUN_JSON = "run.json"
TABLE = "scores.parquet"
CSV = "scores.csv"

#: Free disk space required before a run starts, in bytes.
MIN_FREE_BYTES = 50 * 2**20


class RunStore:
    """Append-only writer and reader of one run folder."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._journal = None

    # -- set-up -------------------------------------------------------------------
    def prepare(self, run_meta: dict) -> None:
        """Create the folder (or check it belongs to the same config) before any work."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BenchError(f"cannot create results folder {self.root}: {exc.strerror}") from None
        if not os.access(self.root, os.W_OK):
            raise BenchError(f"results folder {self.root} is not writable")
        free = shutil.disk_usage(self.root).free
        if free < MIN_FREE_BYTES:
            raise BenchError(f"only {free / 2**20:.0f} MiB free at {self.root}; need at least "
                             f"{MIN_FREE_BYTES / 2**20:.0f} MiB")
        meta_path = self.root / RUN_JSON
        if meta_path.exists():
            old = json.loads(meta_path.read_text())
            if old.get("config_hash") != run_meta["config_hash"]:
                raise BenchError(
                    f"{self.root} holds a run with another configuration "
                    f"(config {old.get('config_hash')} vs {run_meta['config_hash']}); "
                    f"choose another --run-id or --results folder")
            run_meta = {**run_meta, "started_at": old.get("started_at", run_meta.get("started_at"))}
        atomic_write_text(meta_path, json.dumps(run_meta, indent=2, sort_keys=True, default=str))

    def meta(self) -> dict:
        path = self.root / RUN_JSON
        if not path.exists():
            raise BenchError(f"{self.root} is not a run folder (no {RUN_JSON})")
        return json.loads(path.read_text())

    # -- journal ------------------------------------------------------------------
    def append(self, rows: list[dict]) -> None:
        """Append rows to the journal and flush them to disk."""
        if self._journal is None:
            drop_torn_tail(self.root / JOURNAL)
            self._journal = open(self.root / JOURNAL, "a", encoding="utf-8")
        append_jsonl(self._journal, rows)

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def read_journal(self) -> list[dict]:
        """All complete rows in the journal (a torn last line is dropped)."""
        return read_jsonl(self.root / JOURNAL)

    def finished_keys(self, *, retry_errors: bool = False, rows: list[dict] | None = None) -> set[str]:
        """Trial keys already in the journal (only ok ones when ``retry_errors``).

        ``rows``: the journal's rows if the caller has read them already.
        """
        rows = self.read_journal() if rows is None else rows
        return {r["trial_key"] for r in rows if not retry_errors or r.get("status") == "ok"}

    # -- table --------------------------------------------------------------------
    def write_table(self) -> pd.DataFrame:
        """Rebuild ``scores.parquet``/``scores.csv`` from the journal, atomically."""
        table = journal_to_table(self.read_journal())
        tmp = self.root / (TABLE + ".tmp")
        table.to_parquet(tmp, index=False)
        os.replace(tmp, self.root / TABLE)
        tmp_csv = self.root / (CSV + ".tmp")
        table.to_csv(tmp_csv, index=False)
        os.replace(tmp_csv, self.root / CSV)
        return table


def journal_to_table(rows: list[dict]) -> pd.DataFrame:
    """One row per trial (the last journal row wins), sorted by trial key."""
    if not rows:
        return pd.DataFrame(columns=["trial_key", "status"])
    df = pd.DataFrame(rows)
    df = df.drop_duplicates("trial_key", keep="last").sort_values("trial_key", kind="stable")
    if "scenario" in df:  # rows journalled before noisy scenarios existed are clean trials
        df["scenario"] = df["scenario"].fillna("clean")
        df["noise"] = df["noise"].fillna("none")
    return df.reset_index(drop=True)


def load_table(run_dir: str | Path) -> pd.DataFrame:
    """The results table of a run folder (from the journal if the table is stale or absent)."""
    root = Path(run_dir)
    if not root.is_dir():
        raise BenchError(f"no such run folder: {root}")
    table, journal = root / TABLE, root / JOURNAL
    if table.exists() and (not journal.exists() or table.stat().st_mtime >= journal.stat().st_mtime):
        return pd.read_parquet(table)
    if journal.exists():
        return journal_to_table(RunStore(root).read_journal())
    raise BenchError(f"{root} has no results ({TABLE} or {JOURNAL})")


def read_jsonl(path: Path) -> list[dict]:
    """The complete rows of an append-only JSON-lines file ([] if it is missing; a torn last line is dropped)."""
    if not path.exists():
        return []
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break  # torn write from a kill
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def append_jsonl(fh, rows: list[dict]) -> None:
    """Append rows to an open JSON-lines file and flush them to disk.

    One write per call: one system call, and a crash tears at most the tail.
    """
    fh.write("".join(json.dumps(row, default=_json_default) + "\n" for row in rows))
    fh.flush()
    os.fsync(fh.fileno())


def drop_torn_tail(path: Path) -> None:
    """Cut a journal back to its last complete line (a kill can leave half a row)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 1))
        if fh.read(1) == b"\n":
            return
        fh.seek(0)
        data = fh.read()
        fh.truncate(data.rfind(b"\n") + 1)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` in one step (a temporary file, flushed to disk, then renamed)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)
