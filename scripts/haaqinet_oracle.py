"""How much of HAAQI-Net's error comes from not hearing the reference? Controls with more information.

HAAQI compares the processed signal with a reference (NAL-R of the clean music for the ear); HAAQI-Net
hears the processed signal alone. Some items are then ambiguous by construction: a gain error before NAL-R
gives exactly the input of clean music at another level, with another label. This script trains the
shipped teacher's architecture and recipe (``haaqinet.train.fit``: head, loss, seed, schedule, early
stopping on validation) on the same labels with information the shipped model does not get (``--mode``):

* ``intrusive``: the auditory front end's fixed maps of the reference (at its own level) stacked beside
  those of the judged signal (384 channels instead of 192; only the first convolution and the
  clip-statistics layer widen). Not a product: it bounds what the non-intrusive model could reach with this
  data and this network.
* ``level``: one more front-end channel, the clean music's presentation level (the level the hearing aid
  receives; ``bench run --spl``).
* ``level-cond``: that level and a known flag as two more values of the BLSTM's conditioning vector,
  withheld for a fixed share of the training items, then judged with the level known and withheld.

    python scripts/haaqinet_oracle.py --data data/haaqinet-v6 --mode intrusive --max-seconds 1500 --out oracle.json

Prints LCC / SRCC / MSE per held-out split and the SPL study's LCC per level (validation and test studies,
labels from the study cache); the figures of the shipped recipe without extra information are the shipped
checkpoints' (``bench haaqinet evaluate`` / ``spl-study``).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from haaqinet import data, spl_study
from haaqinet.evaluate import agreement
from haaqinet.model import HAAQINet
from haaqinet.train import (FEATURE_CHUNK, TrainConfig, _arrays, fit, precompute_features, predict_features,
                            withhold_input_levels)

SPLITS = ("val", "test", "unseen-conditions")


HIDDEN_SHARE = 0.25   # level-cond: training items whose presentation level is withheld (fixed, seeded)


def widened_model(seed: int, mode: str) -> HAAQINet:
    """The shipped teacher's architecture, the front end's learned part taking the extra channels of ``mode``
    (``level-cond``: the BLSTM's conditioning vector taking 2 more values instead, see :func:`level_columns`)."""
    torch.manual_seed(seed)
    model = HAAQINet(frontend="auditory")
    if mode == "level-cond":
        lstm = model.blstm
        model.blstm = nn.LSTM(lstm.input_size + 2, lstm.hidden_size, batch_first=True, bidirectional=True)
        return model
    fe = model.frontend
    n_in = fe.n_maps * fe.n_bands
    n_in += n_in if mode == "intrusive" else 1
    fe.stem[0] = nn.Conv1d(n_in, fe.dim, kernel_size=3, padding=1)
    fe.stats = nn.Linear(2 * n_in + fe.n_bands, fe.dim)
    return model


def reference_features(model, folder: Path, recipe: dict, rows: list[dict]) -> np.ndarray:
    """The fixed maps of each row's reference at the row's ``level1_db_spl`` (float16 (n, T, F)).

    Rows of one group at one level share their reference; it is computed once per (group, level1).
    """
    sources, refs, index = {}, {}, []
    for row in rows:
        key = (row["group"], round(float(row["level1_db_spl"]), 9))
        if key not in refs:
            ref = data.item_reference(folder, recipe, row, sources)[2]
            rms = math.sqrt(float(np.mean(ref ** 2)))
            refs[key] = (len(refs), data.to_model_rate(ref), float(row["level1_db_spl"]) + 20 * math.log10(rms),
                         np.asarray(row["audiogram_db_hl"], np.float32))
        index.append(refs[key][0])
    uniq = sorted(refs.values(), key=lambda r: r[0])
    n = max(r[1].size for r in uniq)
    out = None
    for i in range(0, len(uniq), FEATURE_CHUNK):
        chunk = uniq[i:i + FEATURE_CHUNK]
        wav = np.zeros((len(chunk), n), np.float32)
        for j, r in enumerate(chunk):
            wav[j, :r[1].size] = r[1]
        f = precompute_features(model, wav, np.stack([r[3] for r in chunk]), np.array([r[2] for r in chunk],
                                np.float32))
        if out is None:
            out = np.empty((len(uniq),) + f.shape[1:], np.float16)
        out[i:i + len(chunk)] = f
    return out[np.asarray(index)]


def extra_channels(model, folder, recipe, rows, n_frames: int, mode: str) -> np.ndarray:
    """The channels ``mode`` adds beside the judged signal's maps: the reference's maps (``intrusive``) or
    the clean music's presentation level, ``(spl_db - 65) / 20`` on every frame (``level``)."""
    if mode == "intrusive":
        return reference_features(model, folder, recipe, rows)
    level = (np.array([r["spl_db"] for r in rows], np.float32) - 65.0) / 20.0
    return np.broadcast_to(level[:, None, None], (len(rows), n_frames, 1)).astype(np.float16)


def level_columns(spl_db, known) -> np.ndarray:
    """level-cond: two columns appended to the (n, 8) audiograms, which the network divides by 100 with them
    and feeds to the BLSTM on every frame: the clean music's level ``(spl_db - 65) / 20`` where ``known``
    (else 0), and ``known`` itself. With features precomputed the audiogram reaches only that vector, so the
    training loop needs no change."""
    known = np.asarray(known, np.float32)
    level = (np.asarray(spl_db, np.float32) - 65.0) / 20.0 * known
    return 100.0 * np.stack([level, known], axis=1)


def stacked(model, folder, recipe, df, workers, mode, known=None):
    """(judged maps | extra channels, audiograms, judged levels, labels) of ``df``'s items."""
    feats, a, s, y = _arrays(folder, df, workers, model=model)[:4]
    if mode == "level-cond":
        known = np.ones(len(df), bool) if known is None else known
        return feats, np.concatenate([a, level_columns(df["spl_db"], known)], axis=1), s, y
    extra = extra_channels(model, folder, recipe, df.to_dict("records"), feats.shape[1], mode)
    return np.concatenate([feats, extra], axis=2), a, s, y


def study(model, folder, recipe, split, n_groups, workers, mode) -> dict:
    """LCC per level and pooled of the model on the (cached) SPL study of ``split``: ``{name: result}``, with
    ``name`` the study's (``val_study``), and for ``level-cond`` also ``val_study (level withheld)``."""
    table, x16, _ = spl_study.build_study(folder, n_groups=n_groups, split=split, workers=workers)
    a = np.stack(table["audiogram_db_hl"].map(np.asarray).to_numpy()).astype(np.float32)
    s = table["judged_db_spl"].to_numpy(np.float32)
    feats = np.concatenate([precompute_features(model, x16[i:i + FEATURE_CHUNK], a[i:i + FEATURE_CHUNK],
                                                s[i:i + FEATURE_CHUNK]) for i in range(0, len(x16), FEATURE_CHUNK)])
    name = f"{split}_study"
    if mode == "level-cond":
        return {f"{name}{suffix}": _per_level(table, predict_features(
                    model, feats, np.concatenate([a, level_columns(table["spl_db"], np.full(len(table), known))],
                                                 axis=1), s))
                for suffix, known in (("", True), (" (level withheld)", False))}
    items = data.load_labels(folder, splits=[split]).set_index("item_id", drop=False)
    rows = [{**items.loc[iid].to_dict(), "level1_db_spl": l1, "spl_db": lv}
            for iid, l1, lv in zip(table["item_id"], table["level1_db_spl"], table["spl_db"])]
    extra = extra_channels(model, folder, recipe, rows, feats.shape[1], mode)
    return {name: _per_level(table, predict_features(model, np.concatenate([feats, extra], axis=2), a, s))}


def _per_level(table, pred) -> dict:
    per_level = {f"{lv:g}": agreement(table["haaqi"][table["spl_db"] == lv], pred[table["spl_db"] == lv])["lcc"]
                 for lv in sorted(set(table["spl_db"]))}
    return {"per_level_lcc": per_level, "gap": max(per_level.values()) - min(per_level.values()),
            "pooled": agreement(table["haaqi"], pred)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--mode", choices=("intrusive", "level", "level-cond"), default="intrusive",
                    help="intrusive: the reference's maps; level: only the clean music's presentation level, as a "
                         "front-end channel; level-cond: the same level in the BLSTM's conditioning vector, "
                         f"withheld for {HIDDEN_SHARE:.0%} of the training items and evaluated known and withheld")
    ap.add_argument("--eval-data", type=Path, help="data set of the held-out splits and the SPL studies (default: "
                    "--data; a grown set has its parent's splits, and the parent may hold the studies' labels)")
    ap.add_argument("--max-seconds", type=float, default=1500.0)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--val-study-groups", type=int, default=50)
    ap.add_argument("--test-study-groups", type=int, default=300)
    ap.add_argument("--out", type=Path, help="also write the figures as JSON")
    args = ap.parse_args()
    folder, recipe = args.data, data.read_recipe(args.data)
    cfg = TrainConfig(epochs=args.epochs, batch_size=64, patience=4, max_seconds=args.max_seconds,
                      workers=args.workers)
    model = widened_model(cfg.seed, args.mode)
    t0 = time.perf_counter()
    train_df = data.load_labels(folder, splits=["train"])
    known = ~np.isnan(withhold_input_levels(train_df["spl_db"].to_numpy(np.float32), HIDDEN_SHARE, cfg.seed))
    train = stacked(model, folder, recipe, train_df, args.workers, args.mode, known)
    folder, recipe = args.eval_data or folder, data.read_recipe(args.eval_data or folder)
    held = {sp: (data.load_labels(folder, splits=[sp]),) for sp in SPLITS}
    held = {sp: (df, stacked(model, folder, recipe, df, args.workers, args.mode)) for sp, (df,) in held.items()}
    print(f"features: {len(train[3])} train items in {time.perf_counter() - t0:.0f} s", flush=True)
    history = fit(model, train, held["val"][1], cfg, log=lambda m: print(m, flush=True))
    del train
    model.eval()
    report = {"mode": args.mode, "training": {"epochs": len(history["epochs"]), "seconds": history["train_seconds"],
                           "best_val_mse": history["best_val_mse"]}, "splits": {}, "per_spl": {}}
    for sp, (df, arrays) in held.items():
        pred = predict_features(model, *arrays[:3])
        report["splits"][sp] = agreement(arrays[3], pred)
        bands = (df["spl_db"].to_numpy() // 5 * 5).astype(int)
        report["per_spl"][sp] = {int(b): agreement(arrays[3][bands == b], pred[bands == b])["lcc"]
                                 for b in sorted(set(bands))}
    if args.mode == "level-cond":   # the same network with the level withheld everywhere
        for sp, (df, arrays) in held.items():
            a = np.concatenate([arrays[1][:, :8], level_columns(df["spl_db"], np.zeros(len(df), bool))], axis=1)
            report["splits"][f"{sp} (level withheld)"] = agreement(arrays[3], predict_features(model, arrays[0], a,
                                                                                              arrays[2]))
    report |= study(model, folder, recipe, "val", args.val_study_groups, args.workers, args.mode)
    report |= study(model, folder, recipe, "test", args.test_study_groups, args.workers, args.mode)
    for sp, m in report["splits"].items():
        print(f"{sp}: LCC {m['lcc']:.4f} SRCC {m['srcc']:.4f} MSE {m['mse']:.5f} (n={m['n']})")
    for name in [k for k in report if "_study" in k]:
        st = report[name]
        levels = " ".join(f"{v:.3f}" for v in st["per_level_lcc"].values())
        print(f"{name}: LCC per level {levels}; gap {st['gap']:.3f}; pooled {st['pooled']['lcc']:.4f}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
