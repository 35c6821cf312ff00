"""What averaging several HAAQI-Net checkpoints would buy: each model and their mean, on the same items.

Scores every checkpoint on the held-out splits of a data set (``haaqinet.evaluate``) and on a validation
SPL study (``haaqinet.spl_study``: groups relabelled at 45-85 dB SPL; labels cached by the study), then the
plain mean of their predictions:

    python scripts/haaqinet_ensemble.py --data data/haaqinet-v6 --checkpoint teacher \\
        --checkpoint other.pt --checkpoint third.pt --study-groups 50

Prints LCC / SRCC / MSE per split and the study's worst level, gap and pooled LCC, per model and for the mean.
With ``--subsets`` it also prints the mean of every subset of two or more of the checkpoints, on the
validation items and the validation study only (choose a subset there; the test split stays unseen).
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from haaqinet import spl_study
from haaqinet.evaluate import agreement, evaluate
from haaqinet.predict import resolve_checkpoint

SPLITS = ("val", "test", "unseen-conditions")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--checkpoint", action="append", required=True, help="two or more (paths, default, student)")
    ap.add_argument("--study-groups", type=int, default=50, help="validation groups of the SPL study (0: none)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--subsets", action="store_true", help="also every subset's mean, on validation only")
    ap.add_argument("--out", type=Path, help="also write the figures as JSON")
    args = ap.parse_args()
    names = [resolve_checkpoint(c).name for c in args.checkpoint]
    preds, df = [], None
    for ck in args.checkpoint:
        _, items = evaluate(ck, args.data, splits=SPLITS, workers=args.workers, max_train_items=0)
        preds.append(items["haaqinet"].to_numpy())
        df = items
    columns = {**dict(zip(names, preds)), "mean": np.mean(preds, axis=0)}
    out = {"checkpoints": args.checkpoint, "splits": {}, "study": {}}
    for split in SPLITS:
        mask = (df["split"] == split).to_numpy()
        out["splits"][split] = {k: agreement(df["haaqi"][mask], p[mask]) for k, p in columns.items()}
        for k, a in out["splits"][split].items():
            print(f"{split:<18} {k:<32} n={a['n']}  LCC {a['lcc']:.4f}  SRCC {a['srcc']:.4f}  MSE {a['mse']:.4f}")
    subsets = _subsets(len(names)) if args.subsets else []
    val = (df["split"] == "val").to_numpy()
    out["subsets"] = {}
    for subset in subsets:
        a = agreement(df["haaqi"][val], np.mean([preds[i] for i in subset], axis=0)[val])
        out["subsets"][_label(subset)] = {"val": a}
        print(f"val                mean of {_label(subset):<24} LCC {a['lcc']:.4f}  SRCC {a['srcc']:.4f}  "
              f"MSE {a['mse']:.4f}")
    if args.study_groups:
        res = spl_study.run_study(args.checkpoint, args.data, n_groups=args.study_groups, split="val",
                                  workers=args.workers, log=lambda _: None)
        items = res["items"]
        cols = [c for c in items.columns if c.startswith("haaqinet:")]
        means = [("mean", items[cols].mean(axis=1))]
        means += [(f"mean of {_label(sub)}", items[[cols[i] for i in sub]].mean(axis=1)) for sub in subsets]
        for label, pred in [(c.split(":", 1)[1], items[c]) for c in cols] + means:
            frame = items.assign(haaqinet=pred)
            s = spl_study.summarise(spl_study.study_table(frame, label=label), frame)
            out["study"][label] = {k: s[k] for k in ("worst_lcc", "worst_spl_db", "best_lcc", "best_spl_db", "gap")}
            out["study"][label]["pooled_lcc"] = s["pooled"]["lcc"]
            r = out["study"][label]
            print(f"val SPL study      {label:<32} worst {r['worst_lcc']:.4f} at {r['worst_spl_db']:g} dB, "
                  f"best {r['best_lcc']:.4f} at {r['best_spl_db']:g} dB, gap {r['gap']:.4f}, "
                  f"pooled LCC {r['pooled_lcc']:.4f}")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1, default=float) + "\n")


def _subsets(n: int) -> list[tuple[int, ...]]:
    """Every subset of two or more of n checkpoints, as index tuples (the full set included)."""
    return [sub for k in range(2, n + 1) for sub in itertools.combinations(range(n), k)]


def _label(subset) -> str:
    """Checkpoints by their 1-based position on the command line: "1+3+4"."""
    return "+".join(str(i + 1) for i in subset)


if __name__ == "__main__":
    main()
