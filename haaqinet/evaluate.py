"""Agreement between HAAQI-Net and HAAQI: LCC, SRCC, MSE and Kendall's tau, per split, SPL and severity.

:func:`agreement` computes the four statistics for paired arrays.
:func:`report` groups a table of items (columns ``haaqi``, ``haaqinet``,
``split``, ``spl_db``, ``severity``, ``condition``) the museval way: overall, per
split, per split and SPL band (5-dB bands centred on 45, 50, ..., 85 dB SPL), per
split and WHO severity grade, plus the predictions for clean music through NAL-R
(condition ``nalr`` with a label of at least 0.99), and per split where the squared error comes from
(:func:`error_sources`: per degradation kind and per clean aid).
:func:`evaluate` runs a checkpoint over a data set's splits and returns the
report and the per-item predictions.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from benchmark.audiogram import SEVERITY_ORDER

#: Splits reported by default, in order.
EVAL_SPLITS = ("test", "unseen-conditions", "val", "train")
#: Clean music through NAL-R counts as "HAAQI about 1" above this label (HAAQI gives identical signals
#: less than 1 when the reference is barely audible, e.g. profound losses at 45 dB SPL).
CLEAN_MIN_HAAQI = 0.99
#: Targets of the issue: (split, statistic, bound, "min" | "max").
TARGETS = (("test", "lcc", 0.95, "min"), ("test", "srcc", 0.95, "min"), ("test", "mse", 0.005, "max"),
           ("unseen-conditions", "lcc", 0.90, "min"))


def agreement(haaqi, predicted) -> dict:
    """``{"n", "lcc", "srcc", "mse", "kendall"}`` of predictions against HAAQI labels (NaN if n < 3)."""
    from scipy import stats

    y = np.asarray(haaqi, dtype=float)
    p = np.asarray(predicted, dtype=float)
    out = {"n": int(y.size), "mse": float(np.mean((y - p) ** 2)) if y.size else math.nan}
    if y.size < 3 or np.std(y) == 0 or np.std(p) == 0:
        return {**out, "lcc": math.nan, "srcc": math.nan, "kendall": math.nan}
    return {**out, "lcc": float(stats.pearsonr(y, p)[0]), "srcc": float(stats.spearmanr(y, p)[0]),
            "kendall": float(stats.kendalltau(y, p)[0])}


def spl_band(spl_db) -> np.ndarray:
    """5-dB band centre of each level (45, 50, ..., 85 dB SPL)."""
    return (5.0 * np.round(np.asarray(spl_db, dtype=float) / 5.0)).astype(int)


def report(df, *, splits=EVAL_SPLITS) -> dict:
    """Agreement statistics of a table with ``haaqi`` and ``haaqinet`` columns (see module docstring)."""
    out = {"overall": agreement(df["haaqi"], df["haaqinet"]), "per_split": {}, "per_spl": {},
           "per_severity": {}, "clean_nalr": {}}
    df = df.assign(spl_band=spl_band(df["spl_db"]))
    for split in splits:
        part = df[df["split"] == split]
        if part.empty:
            continue
        out["per_split"][split] = agreement(part["haaqi"], part["haaqinet"])
        out["per_spl"][split] = {int(b): agreement(g["haaqi"], g["haaqinet"])
                                 for b, g in sorted(part.groupby("spl_band"))}
        out["per_severity"][split] = {s: agreement(g["haaqi"], g["haaqinet"]) for s in SEVERITY_ORDER
                                      for g in [part[part["severity"] == s]] if len(g)}
        clean = part[(part["condition"] == "nalr") & (part["haaqi"] >= CLEAN_MIN_HAAQI)]
        if len(clean):
            out["clean_nalr"][split] = {"n": int(len(clean)), "haaqi_mean": float(clean["haaqi"].mean()),
                                        "pred_mean": float(clean["haaqinet"].mean()),
                                        "pred_min": float(clean["haaqinet"].min()),
                                        "share_ge_0.9": float((clean["haaqinet"] >= 0.9).mean())}
    if "kinds" in df.columns and "aid" in df.columns:
        out["per_kind"] = {split: error_sources(df[df["split"] == split]) for split in out["per_split"]}
    out["targets"] = check_targets(out)
    return out


def error_sources(df) -> list[dict]:
    """Where the squared error of a split comes from: one row per degradation kind and per clean aid.

    An item counts under every kind in its chain (so shares of kinds overlap);
    items with no degradation count under ``clean <aid>``. Each row: n, HAAQI
    and predicted means, bias (predicted minus HAAQI), LCC, MSE and the
    row's share of the split's squared error; largest share first.
    """
    sq = (df["haaqinet"] - df["haaqi"]) ** 2
    total = float(sq.sum()) or 1.0
    groups = {}
    for i, (kinds, aid) in enumerate(zip(df["kinds"], df["aid"])):
        for name in (list(kinds) if len(kinds) else [f"clean {aid}"]):
            groups.setdefault(name, []).append(i)
    rows = []
    for name, idx in groups.items():
        g = df.iloc[idx]
        m = agreement(g["haaqi"], g["haaqinet"])
        rows.append({"group": name, "n": m["n"], "haaqi_mean": float(g["haaqi"].mean()),
                     "pred_mean": float(g["haaqinet"].mean()),
                     "bias": float((g["haaqinet"] - g["haaqi"]).mean()), "lcc": m["lcc"], "mse": m["mse"],
                     "share_of_squared_error": float(sq.iloc[idx].sum()) / total})
    return sorted(rows, key=lambda r: -r["share_of_squared_error"])


def check_targets(rep: dict) -> list[dict]:
    """Each target of the issue with the measured value and whether it is met."""
    rows = []
    for split, stat, bound, kind in TARGETS:
        value = rep["per_split"].get(split, {}).get(stat, math.nan)
        rows.append({"target": f"{split} {stat} {'>=' if kind == 'min' else '<='} {bound}", "value": value,
                     "met": bool(value >= bound if kind == "min" else value <= bound)})
    for split in ("test",):
        per_spl = rep["per_spl"].get(split, {})
        if per_spl:
            worst = min(per_spl.items(), key=lambda kv: kv[1]["lcc"] if not math.isnan(kv[1]["lcc"]) else -1)
            rows.append({"target": f"{split} every SPL band LCC >= 0.93 (worst {worst[0]} dB)",
                         "value": worst[1]["lcc"], "met": bool(worst[1]["lcc"] >= 0.93)})
    clean = [v for v in rep["clean_nalr"].values()]
    if clean:
        low = min(c["pred_min"] for c in clean)
        rows.append({"target": "clean NAL-R music predicted >= 0.9 (minimum over items)", "value": low,
                     "met": bool(low >= 0.9)})
    return rows


def format_report(rep: dict) -> str:
    """Markdown tables of a :func:`report`."""
    def line(name, m):
        return f"| {name} | {m['n']} | {m['lcc']:.4f} | {m['srcc']:.4f} | {m['mse']:.5f} | {m['kendall']:.4f} |"

    head = "| group | n | LCC | SRCC | MSE | Kendall |\n|---|---|---|---|---|---|"
    parts = ["### Overall and per split", head, line("all", rep["overall"])]
    parts += [line(s, m) for s, m in rep["per_split"].items()]
    for split, per in rep["per_spl"].items():
        parts += [f"\n### Per SPL band, {split}", head] + [line(f"{b} dB SPL", m) for b, m in per.items()]
    for split, per in rep["per_severity"].items():
        parts += [f"\n### Per severity, {split}", head] + [line(s, m) for s, m in per.items()]
    if rep["clean_nalr"]:
        parts += ["\n### Clean music through NAL-R (HAAQI about 1)", "| split | n | HAAQI mean | predicted mean | "
                  "predicted min | share >= 0.9 |", "|---|---|---|---|---|---|"]
        parts += [f"| {s} | {c['n']} | {c['haaqi_mean']:.4f} | {c['pred_mean']:.4f} | {c['pred_min']:.4f} | "
                  f"{c['share_ge_0.9']:.3f} |" for s, c in rep["clean_nalr"].items()]
    for split, rows in rep.get("per_kind", {}).items():
        parts += [f"\n### Where the error comes from, {split} (per degradation kind; clean = aid only)",
                  "| group | n | HAAQI mean | predicted mean | bias | LCC | MSE | share of squared error |",
                  "|---|---|---|---|---|---|---|---|"]
        parts += [f"| {r['group']} | {r['n']} | {r['haaqi_mean']:.3f} | {r['pred_mean']:.3f} | {r['bias']:+.3f} | "
                  f"{r['lcc']:.3f} | {r['mse']:.4f} | {100 * r['share_of_squared_error']:.1f} % |" for r in rows]
    parts += ["\n### Targets", "| target | value | met |", "|---|---|---|"]
    parts += [f"| {t['target']} | {t['value']:.4f} | {'yes' if t['met'] else 'NO'} |" for t in rep["targets"]]
    return "\n".join(parts)


def evaluate(model, data_folder: Path, *, splits=EVAL_SPLITS, device: str = "cpu", batch_size: int = 32,
             workers: int = 1, max_train_items: int | None = 2000, progress=None, input_level: bool = True):
    """Predict every item of ``splits`` of a data set and compare with its HAAQI label.

    Args:
        model: a :class:`~haaqinet.model.HAAQINet`, a checkpoint path or a checkpoint name (``student``).
        data_folder: a data set made by ``make-data``.
        max_train_items: evaluate at most this many training items (a seeded sample).
        input_level: give networks with ``input_level`` each item's clean-music presentation level (its
            ``spl_db``, as ``bench run`` does); False judges them with the level unknown.

    Returns:
        (report dict, DataFrame of items with a ``haaqinet`` column).
    """
    import pandas as pd

    from haaqinet import data
    from haaqinet.predict import predict_arrays

    if isinstance(model, (str, Path)):
        from haaqinet.checkpoint import load_checkpoint
        from haaqinet.predict import resolve_checkpoint

        model = load_checkpoint(resolve_checkpoint(model), map_location=device)
    df = data.load_labels(data_folder, splits=splits)
    if max_train_items is not None:
        train = df[df["split"] == "train"]
        if len(train) > max_train_items:
            keep = train.sample(max_train_items, random_state=0).index
            df = df[(df["split"] != "train") | df.index.isin(keep)]
    df = df.reset_index(drop=True)
    x = data.model_inputs(data_folder, df, workers=workers, progress=progress)
    input_spl = df["spl_db"].to_numpy(np.float32) if input_level else np.full(len(df), np.nan, np.float32)
    pred = predict_arrays(model, x, data.audiogram_array(df), df["judged_db_spl"].to_numpy(np.float32),
                          batch_size=batch_size, device=device, input_spl_db=input_spl)
    df = df.assign(haaqinet=pred)
    return report(df, splits=[s for s in splits if s in set(df["split"])]), pd.DataFrame(df)
