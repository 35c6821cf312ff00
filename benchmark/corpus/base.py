"""The corpus data model: :class:`Clip`, :class:`Corpus` and the manifest.

A corpus is a list of excerpts ("clips"). Each clip is a fixed window
``[start_s, start_s + duration_s)`` of one audio file; the benchmark only ever
sees that window, through :func:`benchmark.corpus.load_excerpt`.

The manifest is a CSV table with one row per clip and the columns of
:data:`MANIFEST_COLUMNS`. It is written with one canonical formatting
(``\\n`` line ends, floats as Python's shortest round-trip ``repr``), so its
SHA-256 (:attr:`Corpus.manifest_hash`) identifies the corpus exactly and is
recorded in every result's provenance.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

from benchmark.errors import BenchError

#: Columns of ``manifest.csv``, in order.
MANIFEST_COLUMNS = (
    "clip_id",
    "file",
    "title",
    "piece",
    "instrumentation",
    "start_s",
    "duration_s",
    "sample_rate_hz",
    "sha256",
)


@dataclass(frozen=True)
class Clip:
    """One excerpt of one audio file.

    Attributes:
        clip_id: stable, filesystem-safe id, unique within its corpus
            (``"bach-bwv269-organ"``; for a user folder, a slug of the file's
            relative path, or the track name for MUSDB).
        path: the audio file (absolute).
        title: a human-readable title.
        instrumentation: e.g. ``"piano"``, ``"strings"``,
            ``"ensemble+percussion"``; ``"unknown"`` for user files.
        start_s: start of the excerpt window in the file, in seconds.
        duration_s: length of the excerpt window, in seconds.
        sha256: SHA-256 of the excerpt's samples exactly as
            :func:`~benchmark.corpus.load_excerpt` returns them: the bytes of
            the C-ordered little-endian float32 array of shape (2, n_samples).
            The same definition holds for the built-in and user corpora.
    """

    clip_id: str
    path: Path
    title: str
    instrumentation: str
    start_s: float
    duration_s: float
    sha256: str


@dataclass(frozen=True)
class Corpus:
    """A set of clips plus what was left out.

    Attributes:
        name: ``"builtin"`` or the folder's name.
        root: the folder that holds the audio files (absolute).
        clips: the usable clips, sorted by ``clip_id``.
        skipped: ``(path, reason)`` for every file that was silent,
            unreadable or otherwise unusable.
        manifest_hash: SHA-256 of the canonical manifest CSV text.
    """

    name: str
    root: Path
    clips: tuple[Clip, ...]
    skipped: tuple[tuple[str, str], ...]
    manifest_hash: str

    def __len__(self) -> int:
        return len(self.clips)

    def clip(self, clip_id: str) -> Clip:
        """The clip called ``clip_id`` (KeyError if absent)."""
        for c in self.clips:
            if c.clip_id == clip_id:
                return c
        raise KeyError(clip_id)


def default_cache_dir() -> Path:
    """``$HAAQI_BENCH_CACHE`` if set, else ``~/.cache/haaqi-bench``."""
    env = os.environ.get("HAAQI_BENCH_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "haaqi-bench"


def samples_sha256(signal) -> str:
    """SHA-256 of a float32 (n_channels, n_samples) array's little-endian bytes."""
    import numpy as np

    x = np.ascontiguousarray(signal, dtype="<f4")
    return hashlib.sha256(x.tobytes()).hexdigest()


_SLUG_BAD = re.compile(r"[^a-z0-9._]+")


def slugify(text: str) -> str:
    """Lower-case, filesystem-safe id: runs of other characters become ``-``."""
    slug = _SLUG_BAD.sub("-", text.lower()).strip("-.")
    return slug or "clip"


def manifest_text(rows: list[dict]) -> str:
    """The canonical CSV text of manifest ``rows`` (dicts keyed by MANIFEST_COLUMNS)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for row in rows:
        writer.writerow([_fmt(row[col]) for col in MANIFEST_COLUMNS])
    return buf.getvalue()


def text_sha256(text: str) -> str:
    """SHA-256 of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_manifest(path: Path) -> list[dict]:
    """Rows of a manifest CSV, with numeric columns converted."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["start_s"] = float(row["start_s"])
        row["duration_s"] = float(row["duration_s"])
        row["sample_rate_hz"] = int(row["sample_rate_hz"])
    return rows


def _fmt(value) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def check_excerpt_s(excerpt_s: float) -> float:
    """Validate an excerpt length in seconds (1 to 600)."""
    value = float(excerpt_s)
    if not 1.0 <= value <= 600.0:  # also rejects NaN
        raise BenchError(f"excerpt length {excerpt_s!r} s is out of range; use 1 to 600 s")
    return value
