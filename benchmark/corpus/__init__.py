"""Music corpora: the built-in rendered corpus and user folders of audio.

A :class:`Corpus` is a tuple of :class:`Clip` excerpts. Every consumer reads
audio through :func:`load_excerpt`, which returns exactly a clip's window as
float32, shape (2, n_samples), full scale = 1.0.

>>> corpus = load_corpus()                 # built-in, rendered and cached on first use
>>> corpus = load_corpus("~/data/musdb18hq/test")   # a folder of audio (or MUSDB18-HQ)
>>> signal, sample_rate_hz = load_excerpt(corpus.clips[0])
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmark.corpus.base import MANIFEST_COLUMNS, Clip, Corpus, default_cache_dir
from benchmark.corpus.builtin import build_builtin, builtin_dir
from benchmark.corpus.excerpt import load_excerpt
from benchmark.corpus.user import load_user_corpus

__all__ = [
    "MANIFEST_COLUMNS",
    "Clip",
    "Corpus",
    "build_builtin",
    "builtin_dir",
    "default_cache_dir",
    "load_corpus",
    "load_excerpt",
]

#: The spec that names the built-in corpus. A folder called "builtin" is
#: reached as "./builtin".
BUILTIN = "builtin"


def load_corpus(
    spec: str | os.PathLike | None = None,
    *,
    excerpt_s: float = 10.0,
    cache_dir: Path | None = None,
    progress=None,
) -> Corpus:
    """Load the built-in corpus (``spec`` None or ``"builtin"``) or a folder.

    Args:
        spec: ``None``/``"builtin"``, or the path of a folder of audio files.
        excerpt_s: excerpt length in seconds (1 to 600).
        cache_dir: cache root; default :func:`default_cache_dir`.
        progress: optional ``callable(done: int, total: int, clip_id: str)``.

    Raises:
        BenchError: unknown folder, no audio files, bad ``excerpt_s``.
        AudioError: no file in the folder is usable.
    """
    if spec is None or (isinstance(spec, str) and spec == BUILTIN):
        return build_builtin(excerpt_s=excerpt_s, cache_dir=cache_dir, progress=progress)
    return load_user_corpus(Path(spec), excerpt_s=excerpt_s, cache_dir=cache_dir, progress=progress)
