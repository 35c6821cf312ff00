"""Fine-tuning a HAAQI-Net checkpoint on subjective ratings (``bench haaqinet finetune``).

Ratings (:mod:`haaqinet.ratings`; a 1-5 MOS or 0-100 MUSHRA-like score mapped to 0-1) are split by
audio file, seeded: a held-out part (``held_out``) that is never trained on, a validation part of the
rest (``val``) for early stopping, and the training part. The model starts from a checkpoint; groups of
layers may be frozen (:data:`FREEZE_GROUPS`). Training: AdamW, a linear warm-up and a cosine decay,
gradient clipping at 1.0, the clip + frame loss against the rating, the best validation MSE kept.

The report compares the zero-shot model (the checkpoint as it is, its HAAQI prediction read as the 0-1
rating) with the fine-tuned one on the held-out ratings: LCC, SRCC, MSE and Kendall's tau, the paired
bootstrap (resampling audio files) of the differences with 95 % percentile intervals, and Williams' test
of the difference between the two dependent correlations with the ratings. A stereo file's prediction
is the mean of its ears (as in :meth:`haaqinet.predict.Predictor.predict_manifest`); in training, each
ear is fitted to the file's rating.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.errors import BenchError

#: Names accepted by ``--freeze`` and the HAAQINet submodules each one freezes.
FREEZE_GROUPS = {
    "frontend": ("frontend",),
    "encoder": ("frontend", "layer_norms", "layer_weights", "adapter"),
    "rnn": ("blstm", "pointwise"),
    "project": ("project",),
    "attention": ("attention",),
    "output": ("frame_score",),
    "map": ("score_map",),
}
#: What ``--calibrate`` freezes when ``--freeze`` is not given: everything but the score map.
CALIBRATE_FREEZE = ("encoder", "rnn", "project", "attention", "output")
#: Learning rates when ``--lr`` is not given: the whole network, and the score map alone.
DEFAULT_LR, CALIBRATE_LR = 5e-4, 0.02


@dataclass
class FinetuneConfig:
    """Fine-tuning settings (all recorded in the sidecar)."""

    checkpoint: str = "teacher"
    scale: str | None = None
    held_out: float = 0.2
    val: float = 0.15
    freeze: list | None = None
    calibrate: bool = False
    epochs: int = 60
    batch_size: int = 32
    lr: float | None = None
    weight_decay: float = 1e-2
    warmup_steps: int = 20
    patience: int = 8
    max_seconds: float | None = None
    bootstrap: int = 2000
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        if self.freeze is None:
            self.freeze = list(CALIBRATE_FREEZE) if self.calibrate else []
        if self.lr is None:
            self.lr = CALIBRATE_LR if self.calibrate and set(CALIBRATE_FREEZE) <= set(self.freeze) else DEFAULT_LR
        if self.lr <= 0:
            raise BenchError(f"--lr must be positive, got {self.lr}")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- statistics ------------------------------------------------------------------------------
def williams_test(r12: float, r13: float, r23: float, n: int) -> dict:
    """Williams' t test of H0: rho12 = rho13 for two correlations sharing variable 1 (Steiger 1980, eq. 14).

    Here 1 = ratings, 2 = fine-tuned, 3 = zero-shot predictions. Returns ``{"t", "df", "p"}`` (two-sided).
    """
    from scipy import stats

    if n < 4 or any(not math.isfinite(r) for r in (r12, r13, r23)):
        return {"t": math.nan, "df": max(n - 3, 0), "p": math.nan}
    det = 1 - r12 ** 2 - r13 ** 2 - r23 ** 2 + 2 * r12 * r13 * r23
    rbar = (r12 + r13) / 2
    denom = 2 * (n - 1) / (n - 3) * det + rbar ** 2 * (1 - r23) ** 3
    if denom <= 0:
        return {"t": math.nan, "df": n - 3, "p": math.nan}
    t = (r12 - r13) * math.sqrt((n - 1) * (1 + r23) / denom)
    return {"t": float(t), "df": n - 3, "p": float(2 * stats.t.sf(abs(t), n - 3))}


def paired_bootstrap(target, zero_shot, finetuned, groups, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Bootstrap of fine-tuned minus zero-shot LCC, SRCC and MSE, resampling groups (audio files).

    Returns:
        ``{stat: {"delta", "ci_low", "ci_high", "p_le_0"}}``: the observed difference, the 95 % percentile
        interval and the share of resamples with no improvement (difference <= 0 for LCC and SRCC,
        >= 0 for MSE).
    """
    from scipy import stats

    y, a, b = (np.asarray(v, dtype=float) for v in (target, zero_shot, finetuned))
    codes, _ = _codes(groups)
    members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
    rng = np.random.default_rng([seed, 43])

    def stat(idx):
        yy, aa, bb = y[idx], a[idx], b[idx]
        if np.std(yy) == 0 or np.std(aa) == 0 or np.std(bb) == 0:
            return (math.nan,) * 3
        return (stats.pearsonr(yy, bb)[0] - stats.pearsonr(yy, aa)[0],
                stats.spearmanr(yy, bb)[0] - stats.spearmanr(yy, aa)[0],
                np.mean((yy - bb) ** 2) - np.mean((yy - aa) ** 2))

    observed = stat(np.arange(len(y)))
    draws = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(members), len(members))
        draws.append(stat(np.concatenate([members[g] for g in pick])))
    draws = np.asarray(draws, dtype=float)
    out = {}
    for j, name in enumerate(("lcc", "srcc", "mse")):
        d = draws[:, j][np.isfinite(draws[:, j])]
        worse = (d >= 0) if name == "mse" else (d <= 0)
        out[name] = {"delta": float(observed[j]),
                     "ci_low": float(np.percentile(d, 2.5)) if d.size else math.nan,
                     "ci_high": float(np.percentile(d, 97.5)) if d.size else math.nan,
                     "p_le_0": float(worse.mean()) if d.size else math.nan, "n_boot": int(d.size)}
    return out


def _codes(values):
    uniq, codes = np.unique(np.asarray([str(v) for v in values]), return_inverse=True)
    return codes, uniq


def split_by_file(files, *, held_out: float, val: float, seed: int) -> np.ndarray:
    """"held-out", "val" or "train" per row; all rows of one audio file share a split (seeded)."""
    codes, uniq = _codes(files)
    n = len(uniq)
    if n < 3:
        raise BenchError(f"fine-tuning needs at least 3 distinct audio files (held-out, validation, training); "
                         f"got {n}")
    if not 0 < held_out < 1 or not 0 < val < 1:
        raise BenchError(f"--held-out ({held_out}) and --val ({val}) must be fractions between 0 and 1")
    order = np.random.default_rng([seed, 47]).permutation(n)
    n_hold = min(max(1, math.ceil(held_out * n)), n - 2)
    n_val = min(max(1, math.ceil(val * (n - n_hold))), n - n_hold - 1)
    split_of = np.empty(n, dtype=object)
    split_of[order[:n_hold]] = "held-out"
    split_of[order[n_hold:n_hold + n_val]] = "val"
    split_of[order[n_hold + n_val:]] = "train"
    return split_of[codes]


# -- inputs ------------------------------------------------------------------------------------
class _Units:
    """Every ear of every rating: inputs (features or waveforms), conditioning, the row it belongs to."""

    def __init__(self, model, table, predictor, device: str, progress=None):
        import torch

        from benchmark.audio_io import read_audio

        self.rows, self.inputs, self.audiogram, self.spl, self.input_spl = [], [], [], [], []
        cache = {}
        for i, row in enumerate(table.to_dict("records")):
            key = (row["path"], float(row["spl_db"]))
            if key not in cache:
                signal, rate = read_audio(row["path"])
                cache[key] = predictor.ears(signal, rate, float(row["spl_db"]), what=row["path"])
            for _, x16, ear_spl in cache[key]:
                self.rows.append(i)
                self.inputs.append(x16)
                self.audiogram.append(row["audiogram_db_hl"])
                self.spl.append(ear_spl)
                self.input_spl.append(row.get("input_spl_db", np.nan))
            if progress:
                progress(i + 1, len(table))
        self.rows = np.asarray(self.rows)
        self.audiogram = np.asarray(self.audiogram, dtype=np.float32)
        self.spl = np.asarray(self.spl, dtype=np.float32)
        self.input_spl = np.asarray(self.input_spl, dtype=np.float32)  # the clean music's level; NaN: unknown
        self.use_features = hasattr(model.frontend, "precompute")
        if self.use_features:  # the fixed stage once, per unit (lengths may differ)
            model.eval()
            with torch.inference_mode():
                self.inputs = [model.precompute(torch.as_tensor(x[None, :], device=device),
                                                torch.as_tensor(self.audiogram[j:j + 1], device=device),
                                                torch.as_tensor(self.spl[j:j + 1], device=device))[0].cpu()
                               for j, x in enumerate(self.inputs)]
        else:
            self.inputs = [torch.as_tensor(x) for x in self.inputs]
        self.base = None

    def cache_scores(self, model, device: str, batch_size: int = 64) -> None:
        """Keep every unit's clip and frame scores before the score map; later passes only apply the map.

        For when the map alone trains: the rest of the network is then fixed and in eval mode, so its
        scores are the same every epoch.
        """
        import torch

        saved, model.score_map = model.score_map, None
        try:
            model.eval()
            base = [None] * len(self.inputs)
            with torch.no_grad():
                for idx in self.batches(np.arange(len(self.inputs)), batch_size):
                    clip, frames = self.forward(model, idx, device)
                    for j, u in enumerate(idx):
                        base[u] = (clip[j].clone(), frames[j].clone())
        finally:
            model.score_map = saved
        self.base = base

    def batches(self, units: np.ndarray, batch_size: int, rng: np.random.Generator | None = None):
        """Lists of unit indices of equal input length (shuffled when ``rng`` is given)."""
        by_len: dict[int, list[int]] = {}
        for u in units:
            by_len.setdefault(int(self.inputs[u].shape[0]), []).append(int(u))
        out = []
        for members in by_len.values():
            members = list(rng.permutation(members)) if rng is not None else members
            out += [members[k:k + batch_size] for k in range(0, len(members), batch_size)]
        if rng is not None:
            out = [out[k] for k in rng.permutation(len(out))]
        return out

    def forward(self, model, idx, device):
        import torch

        if self.base is not None:
            return model.map_scores(torch.stack([self.base[u][0] for u in idx]),
                                    torch.stack([self.base[u][1] for u in idx]))
        x = torch.stack([self.inputs[u] for u in idx]).to(device)
        a = torch.as_tensor(self.audiogram[idx], device=device)
        s = torch.as_tensor(self.spl[idx], device=device)
        li = torch.as_tensor(self.input_spl[idx], device=device)
        if self.use_features:
            return model(None, a, s, features=x.float(), input_spl_db=li)
        return model(x, a, s, input_spl_db=li)

    def predict_rows(self, model, units, n_rows: int, device, batch_size: int = 64) -> np.ndarray:
        """Per-row predictions (mean over the row's ears); rows without units are NaN."""
        import torch

        total, count = np.zeros(n_rows), np.zeros(n_rows)
        model.eval()
        with torch.inference_mode():
            for idx in self.batches(units, batch_size):
                clip, _ = self.forward(model, idx, device)
                np.add.at(total, self.rows[idx], clip.double().cpu().numpy())
                np.add.at(count, self.rows[idx], 1)
        with np.errstate(invalid="ignore"):
            return total / count


def apply_freeze(model, groups) -> list[str]:
    """Freeze the named groups of :data:`FREEZE_GROUPS`; returns the frozen submodule names."""
    from benchmark.registry_util import did_you_mean

    frozen = []
    for g in groups:
        if g not in FREEZE_GROUPS:
            raise BenchError(f"unknown layer group {g!r}{did_you_mean(g, FREEZE_GROUPS)}; "
                             f"freeze any of {', '.join(FREEZE_GROUPS)}")
        for name in FREEZE_GROUPS[g]:
            part = getattr(model, name, None)
            if part is None or name in frozen:
                continue
            part.requires_grad_(False)  # a module or a parameter (layer_weights)
            frozen.append(name)
    if frozen and not any(p.requires_grad for p in model.parameters()):
        raise BenchError(f"--freeze {','.join(groups)} leaves nothing to train")
    return frozen


def _set_train_mode(model, frozen: list[str]) -> None:
    model.train()
    for name in frozen:
        part = getattr(model, name)
        if hasattr(part, "eval"):
            part.eval()  # frozen layers keep their dropout off
    if {"project", "attention", "frame_score"} <= set(frozen):
        model.dropout.eval()  # the head's dropout too, when no layer around it trains (e.g. --calibrate)


def finetune(ratings_csv: Path, out_path: Path, cfg: FinetuneConfig, *, log=print, predictions: Path | None = None,
             progress=None):
    """Fine-tune ``cfg.checkpoint`` on a ratings CSV; evaluate zero-shot against fine-tuned on held-out files.

    Returns:
        (fine-tuned model, report dict; also stored as the checkpoint's sidecar metrics).
    """
    import pandas as pd
    import torch

    from haaqinet.checkpoint import save_checkpoint
    from haaqinet.evaluate import agreement
    from haaqinet.model import haaqinet_loss
    from haaqinet.predict import Predictor, resolve_checkpoint
    from haaqinet.ratings import read_ratings
    from haaqinet.train import EarlyStopping, TrainConfig, _lr_lambda, hardware

    t_start = time.perf_counter()
    table, scale = read_ratings(ratings_csv, scale=cfg.scale)
    base_path = resolve_checkpoint(cfg.checkpoint)
    from haaqinet.ensemble import require_network

    predictor = Predictor(base_path, device=cfg.device)
    model = require_network(predictor.model, "fine-tuning", base_path)
    split = split_by_file(table["path"], held_out=cfg.held_out, val=cfg.val, seed=cfg.seed)
    counts = {s: int((split == s).sum()) for s in ("train", "val", "held-out")}
    log(f"{len(table)} ratings ({scale}) of {table['path'].nunique()} files: {counts['train']} training, "
        f"{counts['val']} validation, {counts['held-out']} held-out")
    units = _Units(model, table, predictor, cfg.device, progress=progress)
    rows_of = {s: np.flatnonzero(split == s) for s in counts}
    units_of = {s: np.flatnonzero(np.isin(units.rows, rows_of[s])) for s in counts}
    target = table["target"].to_numpy(float)
    zero = units.predict_rows(model, units_of["held-out"], len(table), cfg.device)
    zero_val = units.predict_rows(model, units_of["val"], len(table), cfg.device)

    if cfg.calibrate:
        model.add_score_map()
    frozen = apply_freeze(model, cfg.freeze)
    params = [p for p in model.parameters() if p.requires_grad]
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 53])
    steps_per_epoch = len(units.batches(units_of["train"], cfg.batch_size))
    mapping = {id(p) for p in (model.score_map.parameters() if model.score_map is not None else ())}
    map_only = bool(mapping) and all(id(p) in mapping for p in params)
    if map_only:
        units.cache_scores(model, cfg.device)       # only the map trains: the network's scores are fixed
    opt = torch.optim.AdamW([  # no weight decay on the map: it would pull it away from the identity
        {"params": [p for p in params if id(p) not in mapping], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if id(p) in mapping], "weight_decay": 0.0}], lr=cfg.lr)
    plan = {"total_steps": cfg.epochs * steps_per_epoch}
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(TrainConfig(warmup_steps=cfg.warmup_steps), plan))
    y_units = torch.as_tensor(target[units.rows], dtype=torch.float32, device=cfg.device)
    zero_mse = agreement(target[rows_of["val"]], zero_val[rows_of["val"]])["mse"]
    stopper = EarlyStopping(cfg.patience, cfg.max_seconds, log, zero_mse, copy.deepcopy(model.state_dict()))
    history = []
    log(f"zero-shot validation MSE {zero_mse:.5f}; training {sum(p.numel() for p in params):,} parameters"
        + (f" (frozen: {', '.join(frozen)})" if frozen else ""))
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        _set_train_mode(model, frozen)
        total, n_seen = 0.0, 0
        for idx in units.batches(units_of["train"], cfg.batch_size, rng):
            clip, frames = units.forward(model, idx, cfg.device)
            # a map of the scores is fitted to the clip scores alone: a rating is of the clip, not of each frame
            loss = (clip - y_units[idx]).square().mean() if map_only else haaqinet_loss(clip, frames, y_units[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            n_seen += len(idx)
        pred_val = units.predict_rows(model, units_of["val"], len(table), cfg.device)
        val = agreement(target[rows_of["val"]], pred_val[rows_of["val"]])
        elapsed = time.perf_counter() - t0
        if epoch == 0 and cfg.max_seconds is not None:
            planned = min(cfg.epochs, max(2, int(cfg.max_seconds / max(elapsed, 1e-3))))
            plan["total_steps"] = planned * steps_per_epoch
        history.append({"epoch": epoch + 1, "train_loss": total / max(n_seen, 1), "val": val,
                        "seconds": round(elapsed, 2)})
        log(f"epoch {epoch + 1}: train loss {total / max(n_seen, 1):.5f}, val MSE {val['mse']:.5f} "
            f"LCC {val['lcc']:.4f} ({elapsed:.1f} s)")
        if stopper.update(val["mse"], model, epoch, elapsed):
            break
    stopper.restore(model)
    model.eval()
    tuned = units.predict_rows(model, units_of["held-out"], len(table), cfg.device)
    held = rows_of["held-out"]
    y, a, b = target[held], zero[held], tuned[held]
    zs, ft = agreement(y, a), agreement(y, b)
    r23 = float(np.corrcoef(a, b)[0, 1]) if len(held) > 2 and np.std(a) > 0 and np.std(b) > 0 else math.nan
    report = {
        "scale": scale, "n_ratings": len(table), "n_files": int(table["path"].nunique()), "split_counts": counts,
        "held_out": {"zero_shot": zs, "finetuned": ft,
                     "bootstrap": paired_bootstrap(y, a, b, table["path"].to_numpy()[held], n_boot=cfg.bootstrap,
                                                   seed=cfg.seed),
                     "williams": williams_test(ft["lcc"], zs["lcc"], r23, len(held)),
                     "corr_zero_shot_finetuned": r23},
        "best_val_mse": stopper.best, "history": history, "frozen": frozen,
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    ratings_sha = hashlib.sha256(Path(ratings_csv).read_bytes()).hexdigest()
    extra = {"finetune": cfg.as_dict(), "ratings": {"path": str(Path(ratings_csv).resolve()), "sha256": ratings_sha,
                                                    "scale": scale},
             "base_checkpoint": {"path": str(base_path), "file": base_path.name,
                                 "sha256": hashlib.sha256(base_path.read_bytes()).hexdigest()},
             "output": f"the predicted rating mapped to 0-1 on the {scale} scale (not HAAQI)",
             "hardware": hardware(cfg.device), "seconds": round(time.perf_counter() - t_start, 1),
             "source_commit": os.environ.get("HAAQINET_GIT_SHA")}
    save_checkpoint(out_path, model.cpu(), metrics=report, extra=extra)
    if predictions is not None:
        from haaqinet.ratings import from_unit

        cols = [c for c in ("line", "file", "listener", "audiogram", "spl_db", "score") if c in table.columns]
        out = table[cols].copy()
        out["split"] = split
        out["target"] = target
        out["zero_shot"] = np.nan
        out.loc[held, "zero_shot"] = a
        out["finetuned"] = np.nan
        out.loc[held, "finetuned"] = b
        out["finetuned_score"] = from_unit(out["finetuned"], scale)
        pd.DataFrame(out).to_csv(predictions, index=False)
    return model, report


def format_report(report: dict) -> str:
    """Markdown of a fine-tuning report: zero-shot against fine-tuned on the held-out ratings."""
    h = report["held_out"]
    zs, ft, bs, w = h["zero_shot"], h["finetuned"], h["bootstrap"], h["williams"]
    lines = [f"held-out ratings: n = {zs['n']} ({report['scale']} scale, mapped to 0-1)",
             "| | LCC | SRCC | MSE (0-1) | Kendall |", "|---|---|---|---|---|",
             f"| zero-shot | {zs['lcc']:.4f} | {zs['srcc']:.4f} | {zs['mse']:.5f} | {zs['kendall']:.4f} |",
             f"| fine-tuned | {ft['lcc']:.4f} | {ft['srcc']:.4f} | {ft['mse']:.5f} | {ft['kendall']:.4f} |",
             "", "| difference (fine-tuned - zero-shot) | estimate | 95 % bootstrap CI | share of resamples "
             "without improvement |", "|---|---|---|---|"]
    for k in ("lcc", "srcc", "mse"):
        b = bs[k]
        lines.append(f"| {k.upper()} | {b['delta']:+.4f} | [{b['ci_low']:+.4f}, {b['ci_high']:+.4f}] | "
                     f"{b['p_le_0']:.4f} |")
    lines.append(f"\nWilliams' test (LCC fine-tuned vs zero-shot, dependent, n = {zs['n']}): t({w['df']}) = "
                 f"{w['t']:.3f}, p = {w['p']:.3g}")
    return "\n".join(lines)
