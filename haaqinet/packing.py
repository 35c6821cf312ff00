"""A labelled data set as a small, shippable pair: its recipe and its label rows, compressed.

The audio of a data set is regenerated from its recipe (sources rendered from
music21 scores, items rebuilt from the seeds in their rows), so what costs the
time is the HAAQI labels: 49,192 of them took about an hour of both cores of the
development machine. :func:`pack` writes ``recipe.json`` and the journal's rows
(sorted by item id, xz-compressed) to a folder; :func:`unpack` turns such a
folder back into a data set folder that ``train``, ``evaluate``, ``grow`` and
``make-data`` accept as if it had been labelled there. ``haaqinet/datasets/``
holds the packed labels of the shipped model (``docs/haaqinet-data.md``).
"""

from __future__ import annotations

import json
import lzma
import os
import shutil
from pathlib import Path

from benchmark.errors import BenchError
from haaqinet.data import LABELS, RECIPE, read_journal, read_recipe, rerender_missing, write_table

PACKED_LABELS = "labels.jsonl.xz"
#: Where the packed label sets shipped with the code live (``unpack haaqinet-v6`` finds them by name).
SHIPPED_DIR = Path(__file__).resolve().parent / "datasets"


def pack(folder: Path, out: Path) -> dict:
    """Write ``out/recipe.json`` and ``out/labels.jsonl.xz`` (one row per item, by item id) for ``folder``.

    Returns {"items", "errors", "bytes"}. Refuses a folder whose journal is empty.
    """
    folder, out = Path(folder), Path(out)
    read_recipe(folder)                                    # a clear error if it is no data set
    rows = {r["item_id"]: r for r in read_journal(folder)}   # the last row of an item wins, as in write_table
    if not rows:
        raise BenchError(f"{folder} has no labelled items to pack")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(folder / RECIPE, out / RECIPE)
    tmp = out / (PACKED_LABELS + ".tmp")
    with lzma.open(tmp, "wt", encoding="utf-8", preset=9 | lzma.PRESET_EXTREME) as f:
        for item_id in sorted(rows):
            f.write(json.dumps(rows[item_id]) + "\n")
    os.replace(tmp, out / PACKED_LABELS)
    errors = sum(r["status"] != "ok" for r in rows.values())
    return {"items": len(rows), "errors": errors, "bytes": (out / PACKED_LABELS).stat().st_size}


def resolve(packed: str | Path) -> Path:
    """A packed folder given as a path, or as the name of one shipped in :data:`SHIPPED_DIR`."""
    path = Path(packed)
    if not path.is_dir() and (SHIPPED_DIR / str(packed)).is_dir():
        path = SHIPPED_DIR / str(packed)
    if not (path / RECIPE).is_file() or not (path / PACKED_LABELS).is_file():
        shipped = sorted(p.name for p in SHIPPED_DIR.iterdir() if p.is_dir()) if SHIPPED_DIR.is_dir() else []
        raise BenchError(f"{packed} is not a packed label set (a folder with {RECIPE} and {PACKED_LABELS}); "
                         f"shipped: {', '.join(shipped) or 'none'}")
    return path


def unpack(packed: str | Path, folder: Path, *, workers: int = 1) -> dict:
    """Make ``folder`` a data set from a packed one: its recipe, its labels as the journal, its sources.

    Missing sources are rendered again from the recipe by ``workers`` processes (444
    music21 sources for ``haaqinet-v6``, about 1 s each; their checksums are in the recipe).
    Refuses a folder that already has a recipe or labels: nothing is overwritten.
    Returns {"items", "rendered"}.
    """
    src, folder = resolve(packed), Path(folder)
    if (folder / RECIPE).exists() or (folder / LABELS).exists():
        raise BenchError(f"{folder} already holds a data set; give a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (LABELS + ".tmp")
    n = 0
    with lzma.open(src / PACKED_LABELS, "rt", encoding="utf-8") as fin, open(tmp, "w", encoding="utf-8") as fout:
        for line in fin:
            fout.write(line)
            n += 1
    shutil.copy2(src / RECIPE, folder / RECIPE)
    os.replace(tmp, folder / LABELS)
    rendered = rerender_missing(folder, read_recipe(folder), workers=workers)
    write_table(folder)
    return {"items": n, "rendered": rendered}
