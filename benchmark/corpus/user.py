"""User corpora: any folder of audio files, including the MUSDB18-HQ layout.

* Plain folders: every ``.wav``, ``.flac``, ``.ogg`` and ``.mp3`` file below
  the folder (recursively; hidden files and folders are ignored). The clip id
  is a slug of the path relative to the folder, without its suffix
  (``"live/take 1.wav"`` -> ``"live-take-1"``); when two files would share an
  id, the suffix is kept, then ``-2``, ``-3``... are appended in sorted order.
* MUSDB18-HQ: as soon as one file is called ``mixture.wav`` the folder is
  read as ``<split>/<track>/mixture.wav`` or ``<track>/mixture.wav``: only the
  mixtures become clips (id = slug of the track folder's name, prefixed with
  the split if two tracks share a name); the stems are ignored.

Each file's excerpt window is chosen by :func:`~benchmark.corpus.excerpt.analyse_file`.
Files that are unreadable, silent, too short, non-finite or have more than
two channels are listed in :attr:`Corpus.skipped` with the reason.

The analysis of each file is cached in ``<cache>/corpus/user/`` keyed by the
folder's absolute path, and reused while a file's size and modification time
are unchanged; the cached analyses of folders that no longer exist are
deleted whenever a cache file is written.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from benchmark.corpus.base import Clip, Corpus, check_excerpt_s, default_cache_dir, manifest_text, slugify, text_sha256
from benchmark.corpus.excerpt import Window, analyse_file
from benchmark.errors import AudioError, BenchError

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
MUSDB_MIXTURE = "mixture.wav"
#: Bump when the window choice changes, to invalidate cached analyses.
ANALYSIS_VERSION = 1


def load_user_corpus(
    folder: Path | str, *, excerpt_s: float = 10.0, cache_dir: Path | None = None, progress=None
) -> Corpus:
    """Load a folder of audio files as a corpus.

    Args:
        folder: the folder (searched recursively).
        excerpt_s: excerpt length in seconds; shorter files are used whole.
        cache_dir: cache root for the per-file analysis; default
            :func:`default_cache_dir`.
        progress: optional ``callable(done: int, total: int, clip_id: str)``.

    Raises:
        BenchError: the folder does not exist or holds no audio files.
        AudioError: no file in it is usable (the reasons are listed).
    """
    excerpt_s = check_excerpt_s(excerpt_s)
    root = Path(folder).expanduser()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "not found"
        raise BenchError(f"corpus folder {what}: {root}")
    root = root.resolve()
    files, musdb = find_audio_files(root)
    if not files:
        raise BenchError(
            f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in {root}; MUSDB18 .stem.mp4 files are not "
            "supported: use MUSDB18-HQ (or decode the stems to mixture.wav)"
        )
    ids = clip_ids(root, files, musdb=musdb)
    cache = _AnalysisCache(cache_dir, root, excerpt_s)
    rows, skipped = [], []
    for i, path in enumerate(files):
        rel = path.relative_to(root).as_posix()
        try:
            window = cache.lookup(path, rel, excerpt_s)
        except AudioError as exc:
            skipped.append((str(path), str(exc)))
            logger.warning("skipping %s: %s", path, exc)
        else:
            title = path.parent.name if musdb else path.stem
            rows.append({
                "clip_id": ids[path], "file": rel, "title": title, "piece": title, "instrumentation": "unknown",
                "start_s": window.start_s, "duration_s": window.duration_s,
                "sample_rate_hz": window.sample_rate_hz, "sha256": window.sha256,
            })
        if progress is not None:
            progress(i + 1, len(files), ids[path])
    cache.save()
    if not rows:
        reasons = "; ".join(f"{Path(p).name}: {r}" for p, r in skipped[:5])
        raise AudioError(f"none of the {len(files)} audio files in {root} is usable ({reasons})")
    rows.sort(key=lambda r: r["clip_id"])
    clips = tuple(
        Clip(r["clip_id"], root / r["file"], r["title"], "unknown", r["start_s"], r["duration_s"], r["sha256"])
        for r in rows
    )
    return Corpus(root.name, root, clips, tuple(skipped), text_sha256(manifest_text(rows)))


def find_audio_files(root: Path) -> tuple[list[Path], bool]:
    """Sorted audio files below ``root``, and whether it is a MUSDB layout."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files += [Path(dirpath) / f for f in filenames if not f.startswith(".") and f.lower().endswith(AUDIO_SUFFIXES)]
    files.sort(key=lambda p: p.relative_to(root).as_posix())
    mixtures = [p for p in files if p.name == MUSDB_MIXTURE]
    return (mixtures, True) if mixtures else (files, False)


def clip_ids(root: Path, files: list[Path], *, musdb: bool) -> dict[Path, str]:
    """Unique, stable clip ids for ``files`` (see the module docstring)."""
    def rel(p: Path) -> str:
        return p.relative_to(root).as_posix()

    if musdb:
        first = {p: slugify(p.parent.name) for p in files}
        second = {p: slugify(rel(p.parent)) for p in files}
    else:
        first = {p: slugify(rel(p.with_suffix(""))) for p in files}
        second = {p: slugify(rel(p)) for p in files}
    counts = Counter(first.values())
    ids = {p: first[p] if counts[first[p]] == 1 else second[p] for p in files}
    seen: Counter = Counter()
    out = {}
    for p in files:  # already sorted
        seen[ids[p]] += 1
        out[p] = ids[p] if seen[ids[p]] == 1 else f"{ids[p]}-{seen[ids[p]]}"
    return out




class _AnalysisCache:
    """Per-folder JSON cache of window analyses, keyed by file size and mtime."""

    def __init__(self, cache_dir: Path | None, root: Path, excerpt_s: float):
        base = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser()
        self.path = base / "corpus" / "user" / f"{root.name[:40]}-{text_sha256(str(root))[:16]}.json"
        self.header = {"analysis_version": ANALYSIS_VERSION, "excerpt_s": excerpt_s, "root": str(root)}
        self.entries: dict[str, dict] = {}
        self.dirty = False
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if doc.get("header") == self.header:
                self.entries = doc["files"]
        except (OSError, ValueError, KeyError, TypeError):
            pass

    @staticmethod
    def _stamp(path: Path) -> list[int]:
        st = path.stat()
        return [st.st_size, st.st_mtime_ns]

    def lookup(self, path: Path, rel: str, excerpt_s: float) -> Window:
        """The file's window, from the cache or analysed now (AudioError if unusable)."""
        try:
            window = self.get(path, rel)
            if window is None:
                window = self.put(path, rel, analyse_file(path, excerpt_s=excerpt_s))
            return window
        except AudioError as exc:
            self.put_failure(path, rel, str(exc))
            raise
        except Exception as exc:  # a vanished file or a decoder failing oddly is still a bad file
            raise AudioError(f"cannot read: {exc}") from exc

    def get(self, path: Path, rel: str) -> Window | None:
        entry = self.entries.get(rel)
        if entry is None or entry.get("stamp") != self._stamp(path):
            return None
        if "skip" in entry:
            raise AudioError(entry["skip"])
        return Window(entry["start_s"], entry["duration_s"], entry["sample_rate_hz"], entry["sha256"])

    def put(self, path: Path, rel: str, window: Window) -> Window:
        self.entries[rel] = {"stamp": self._stamp(path), **asdict(window)}
        self.dirty = True
        return window

    def put_failure(self, path: Path, rel: str, reason: str) -> None:
        if self.entries.get(rel, {}).get("skip") != reason and path.exists():
            self.entries[rel] = {"stamp": self._stamp(path), "skip": reason}
            self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        tmp = self.path.with_suffix(f".tmp-{os.getpid()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"header": self.header, "files": self.entries}, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            logger.warning("cannot write the corpus analysis cache %s: %s", self.path, exc)
        self._prune()

    def _prune(self) -> None:
        """Delete cached analyses of folders that no longer exist (e.g. temporary ones)."""
        for other in self.path.parent.glob("*.json"):
            try:
                root = json.loads(other.read_text(encoding="utf-8"))["header"]["root"]
                if not Path(root).is_dir():
                    other.unlink()
            except (OSError, ValueError, KeyError, TypeError):
                continue

