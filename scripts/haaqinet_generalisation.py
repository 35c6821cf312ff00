"""Where a HAAQI-Net checkpoint fails to generalise: to new music or to new ears?

Relabels validation groups of a data set four ways and scores the checkpoint on each:
``none`` (as they are), ``ear`` (a training ear instead of the validation ear), ``piece`` (a training
source instead of the validation one, at a seeded offset) and ``both``. The conditions, levels, noise and
HAAQI seeds stay those of the group, so the four rows differ only in what the model has heard in training.

    python scripts/haaqinet_generalisation.py --data data/haaqinet-v6 --groups 150 --checkpoint teacher

About 50 s per variant for 150 groups (600 items) with 2 processes. Prints one line per variant and writes
them as JSON with ``--out``.
"""
from __future__ import annotations

import argparse
import json
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from haaqinet import data
from haaqinet.checkpoint import load_checkpoint
from haaqinet.evaluate import agreement
from haaqinet.predict import predict_arrays, resolve_checkpoint

VARIANTS = ("none", "ear", "piece", "both")


def swapped(recipe: dict, pool: dict, rows: list[dict], variant: str, rng: np.random.Generator) -> list[dict]:
    """The group's rows with a training ear and/or a training source in place of its own."""
    rows = [dict(r) for r in rows]
    if variant in ("ear", "both"):
        name, levels = pool["train"][1][int(rng.integers(len(pool["train"][1])))]
        for r in rows:
            r["audiogram"], r["audiogram_db_hl"] = name, [float(v) for v in levels]
    if variant in ("piece", "both"):
        src = data.recipe_source(recipe, pool["train"][0][int(rng.integers(len(pool["train"][0])))])
        offset_s = data.draw_offset_s(rng, src, recipe["item_s"])
        for r in rows:
            r["source_id"], r["piece"], r["offset_s"] = src["source_id"], src["piece"], offset_s
    return rows


def _label(rows: list[dict]) -> list[tuple]:
    """(HAAQI, judged dB SPL, audiogram, 16-kHz input) of each item of one group (a pool job)."""
    folder, recipe = data._WORKER["folder"], data._WORKER["recipe"]
    clean = data.clean_excerpt(folder, recipe, rows[0], data._WORKER["sources"])
    out = []
    for r in data.label_group(rows, folder, recipe, cache_inputs=False):
        if r["status"] == "ok":
            x, _ = data.synthesise(r, clean)
            out.append((r["haaqi"], r["judged_db_spl"], r["audiogram_db_hl"], data.to_model_rate(x)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--groups", type=int, default=150, help="validation groups (seeded choice)")
    ap.add_argument("--checkpoint", default="teacher")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    recipe = data.read_recipe(args.data)
    pool = data.pools(recipe)
    groups = sorted(data.load_labels(args.data, splits=["val"])["group"].unique())
    groups = [int(g) for g in np.random.default_rng(7).choice(groups, size=min(args.groups, len(groups)),
                                                              replace=False)]
    model = load_checkpoint(resolve_checkpoint(args.checkpoint))
    results = {}
    for variant in VARIANTS:
        t0 = time.perf_counter()
        jobs = [swapped(recipe, pool, [r for r in data.group_items(recipe, g, pool) if len(r["item_id"]) == 8],
                        variant, np.random.default_rng([g, 101])) for g in groups]
        with Pool(args.workers, initializer=data._init_worker, initargs=(str(args.data), recipe, False)) as p:
            items = [item for group in p.map(_label, jobs) for item in group]
        wav = np.zeros((len(items), max(len(i[3]) for i in items)), np.float32)
        for k, item in enumerate(items):
            wav[k, :len(item[3])] = item[3]
        y = np.array([i[0] for i in items])
        pred = predict_arrays(model, wav, np.array([i[2] for i in items], np.float32),
                              np.array([i[1] for i in items], np.float32))
        results[variant] = {**agreement(y, pred), "seconds": round(time.perf_counter() - t0, 1)}
        print(variant, json.dumps(results[variant]), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"checkpoint": str(args.checkpoint), "data": str(args.data),
                                        "groups": groups, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
