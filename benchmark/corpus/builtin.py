"""The built-in corpus: rendered once from music21 scores, then cached.

Cache layout (``<cache>`` is :func:`default_cache_dir` unless given)::

    <cache>/corpus/builtin-<key>/
        manifest.csv    one row per clip (see benchmark.corpus.base)
        recipe.json     everything that went into the key
        clips/<clip_id>.wav   float32 WAV, stereo, 44.1 kHz, exactly the excerpt

``<key>`` is the first 12 hex digits of the SHA-256 of the recipe document
(``recipe.json``, hashed as compact JSON with sorted keys): the
arrangements, ``excerpt_s``, the rendering constants, the soundfont's SHA-256
and the versions of every package on the rendering path. A build renders into
a hidden temporary folder next to the final one and renames it into place, so
a killed build never leaves a half corpus behind.

Each file holds exactly its excerpt, so every clip has ``start_s = 0`` and
``duration_s = n_samples / 44100``; ``sha256`` is that of the float32 samples.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed
from importlib import metadata
from pathlib import Path

from benchmark.corpus import render
from benchmark.corpus.base import (
    Clip,
    Corpus,
    check_excerpt_s,
    default_cache_dir,
    manifest_text,
    read_manifest,
    text_sha256,
)
from benchmark.corpus.recipe import BUILTIN_RECIPE
from benchmark.errors import BenchError

logger = logging.getLogger(__name__)

#: Bump when the rendering code changes its output.
RENDER_VERSION = 1
#: At most this many rendering processes.
MAX_WORKERS = 8
#: Stale temporary build folders older than this are removed, in seconds.
STALE_TMP_S = 3600.0
_PACKAGES = ("music21", "midirenderer", "pretty_midi", "mido", "numpy", "scipy", "soundfile")


def recipe_document(excerpt_s: float) -> dict:
    """Everything that determines the built-in corpus's audio (JSON-ready)."""
    import soundfile

    return {
        "render_version": RENDER_VERSION,
        "excerpt_s": float(excerpt_s),
        "sample_rate_hz": render.SAMPLE_RATE_HZ,
        "target_rms_dbfs": render.TARGET_RMS_DBFS,
        "peak_limit_dbfs": render.PEAK_LIMIT_DBFS,
        "soundfont": {"file": "TimGM6mb.sf2", "sha256": _file_sha256(render.soundfont_path())},
        "versions": {**{p: _version(p) for p in _PACKAGES}, "libsndfile": soundfile.__libsndfile_version__},
        "arrangements": [a.as_dict() for a in BUILTIN_RECIPE],
    }


def builtin_dir(excerpt_s: float = 10.0, cache_dir: Path | None = None) -> Path:
    """Where the built-in corpus for ``excerpt_s`` lives (built or not)."""
    doc = recipe_document(check_excerpt_s(excerpt_s))
    return _corpus_parent(cache_dir) / f"builtin-{_key(doc)}"


def build_builtin(
    *, excerpt_s: float = 10.0, cache_dir: Path | None = None, force: bool = False, progress=None
) -> Corpus:
    """Build the built-in corpus if needed (``force``: always) and load it.

    Args:
        excerpt_s: excerpt length in seconds.
        cache_dir: cache root; default :func:`default_cache_dir`.
        force: render again even if a cached copy exists, then replace it.
        progress: optional ``callable(done: int, total: int, clip_id: str)``,
            called after each rendered clip.
    """
    excerpt_s = check_excerpt_s(excerpt_s)
    doc = recipe_document(excerpt_s)
    final = _corpus_parent(cache_dir) / f"builtin-{_key(doc)}"
    if final.is_dir() and not force:
        try:
            return load_builtin_dir(final)
        except BenchError as exc:
            logger.warning("cached built-in corpus is damaged (%s); rebuilding", exc)
            force = True
    _remove_stale_tmp(final)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    t0 = time.perf_counter()
    try:
        (tmp / "clips").mkdir(parents=True)
    except OSError as exc:
        raise BenchError(f"cannot write the corpus cache at {final.parent} ({exc}); set HAAQI_BENCH_CACHE") from exc
    try:
        rows = _render_all(excerpt_s, tmp, progress)
        (tmp / "manifest.csv").write_text(manifest_text(rows), encoding="utf-8")
        (tmp / "recipe.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _install(tmp, final, replace=force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - t0
    logger.info("built-in corpus: %d clips rendered in %.1f s into %s", len(BUILTIN_RECIPE), seconds, final)
    return load_builtin_dir(final)


def load_builtin_dir(folder: Path) -> Corpus:
    """Load a built corpus folder (raises BenchError if it is incomplete)."""
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        raise BenchError(f"{manifest} is missing")
    rows = read_manifest(manifest)
    clips = []
    for row in rows:
        path = folder / row["file"]
        if not path.is_file():
            raise BenchError(f"{path} is missing")
        clips.append(Clip(
            row["clip_id"], path, row["title"], row["instrumentation"], row["start_s"], row["duration_s"], row["sha256"]
        ))
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    return Corpus("builtin", folder, tuple(clips), (), digest)


def _render_all(excerpt_s: float, folder: Path, progress) -> list[dict]:
    """Render every arrangement into ``folder/clips``; manifest rows sorted by clip_id."""
    jobs = {a.clip_id: a for a in BUILTIN_RECIPE}
    results = _run_jobs(jobs, excerpt_s, folder, progress)
    rows = []
    for cid in sorted(jobs):
        a, (n, sha) = jobs[cid], results[cid]
        rows.append({
            "clip_id": cid, "file": f"clips/{cid}.wav", "title": a.title, "piece": a.source,
            "instrumentation": a.instrumentation, "start_s": 0.0, "duration_s": n / render.SAMPLE_RATE_HZ,
            "sample_rate_hz": render.SAMPLE_RATE_HZ, "sha256": sha,
        })
    return rows


def _run_jobs(jobs: dict, excerpt_s: float, folder: Path, progress) -> dict[str, tuple[int, str]]:
    """Render ``jobs`` in a process pool (serially if none can be made)."""
    results: dict[str, tuple[int, str]] = {}

    def finish(cid: str, get) -> None:
        try:
            results[cid] = get()
        except Exception as exc:
            raise BenchError(f"rendering built-in clip {cid!r} ({jobs[cid].source}) failed: {exc}") from exc
        if progress is not None:
            progress(len(results), len(jobs), cid)

    kwargs = {cid: {"excerpt_s": excerpt_s, "out_path": folder / "clips" / f"{cid}.wav"} for cid in jobs}
    workers = min(len(jobs), os.cpu_count() or 1, MAX_WORKERS)
    pool = None
    if workers > 1:
        try:
            pool = ProcessPoolExecutor(max_workers=workers, initializer=_watch_parent)
        except (OSError, NotImplementedError) as exc:
            logger.info("no process pool (%s); rendering serially", exc)
    if pool is None:
        for cid, arr in jobs.items():
            finish(cid, lambda: render.render_to_file(arr, **kwargs[cid]))
        return results
    try:
        futures = {pool.submit(render.render_to_file, arr, **kwargs[cid]): cid for cid, arr in jobs.items()}
        for fut in as_completed(futures):
            finish(futures[fut], fut.result)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def _watch_parent() -> None:
    """Worker initializer: exit when the building process dies (killed builds leave no workers)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="watch-parent").start()


def _install(tmp: Path, final: Path, *, replace: bool) -> None:
    """Rename ``tmp`` to ``final`` (atomically); with ``replace``, swap out an old copy."""
    old = None
    if final.exists() and replace:
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        final.rename(old)
    try:
        tmp.rename(final)
    except OSError:
        if not final.is_dir():
            raise
        logger.info("another process finished %s first; keeping its copy", final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_stale_tmp(final: Path) -> None:
    if not final.parent.is_dir():
        return
    now = time.time()
    for p in final.parent.glob(f".{final.name}.*"):
        try:
            if now - p.stat().st_mtime > STALE_TMP_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _corpus_parent(cache_dir: Path | None) -> Path:
    return Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser() / "corpus"


def _key(doc: dict) -> str:
    return text_sha256(json.dumps(doc, sort_keys=True))[:12]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
