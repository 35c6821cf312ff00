"""Text for ``bench ls processors|audiograms|corpora``."""

from __future__ import annotations

from benchmark.errors import BenchError
from benchmark.registry_util import did_you_mean

WHAT = ("processors", "audiograms", "corpora")


def render(what: str) -> str:
    if what not in WHAT:
        raise BenchError(f"cannot list {what!r}{did_you_mean(what, WHAT)}; choose {', '.join(WHAT)}")
    return {"processors": _processors, "audiograms": _audiograms, "corpora": _corpora}[what]()


def _processors() -> str:
    from processors import registry

    lines = []
    width = max(len(n) for n in registry.available()) + 1
    for name in registry.available():
        cls = registry.get_class(name)
        lines.append(f"{name:<{width}} {cls.summary}")
        for field, type_, default in registry.describe(name):
            lines.append(f"    --param {name}.{field}={default!s:<10} ({type_})")
    lines.append('chains: --processor "spectral-gating>nalr" runs stages in order (docs/processors.md)')
    return "\n".join(lines)


def _audiograms() -> str:
    from benchmark.audiogram import builtin_audiograms

    lines = [f"{'name':<16} {'PTA dB HL':>9}  severity           dB HL at Hz"]
    for name, a in builtin_audiograms().items():
        values = " ".join(f"{f:g}:{v:g}" for f, v in zip(a.frequencies_hz, a.levels_db_hl))
        lines.append(f"{name:<16} {a.pta_db_hl:9.1f}  {a.severity:<18} {values}")
    return "\n".join(lines)


def _corpora() -> str:
    from benchmark.corpus import default_cache_dir

    lines = ["builtin        rendered from music21 scores with midirenderer (built on first use)"]
    root = default_cache_dir() / "corpus"
    if root.is_dir():
        for path in sorted(root.iterdir()):
            if (path / "manifest.csv").exists():
                lines.append(f"  cached: {path}")
    lines.append("<folder>       any folder of wav/flac/ogg/mp3, or a MUSDB18(-HQ) folder (--corpus PATH)")
    return "\n".join(lines)
