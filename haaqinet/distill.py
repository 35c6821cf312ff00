"""Knowledge distillation: a small HAAQI-Net student trained from a teacher checkpoint.

The loss, the student's configuration and the exact command that made the shipped student are in
``docs/haaqinet-distill.md``. In short, with HAAQI label ``y``, teacher clip score ``t`` and frame
scores ``t_k``, student clip score ``s`` and frame scores ``s_k`` (both sequences average-pooled to
the shorter one's length ``K``), and the student's and teacher's encoder outputs ``h^S``, ``h^T``::

    L = alpha * (s - y)^2 + (1 - alpha) * (s - t)^2
        + frame_weight * mean_k [ alpha * (s_k - y)^2 + (1 - alpha) * (s_k - t_k)^2 ]
        + hint_weight * mean_k,d (P h^S_k - h^T_k)^2          (P: a linear map, used in training only)

The teacher's outputs are computed once per item (and cached under ``<data>/cache/distill/``), as are
the student's fixed front-end features; training then runs on those arrays only.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmark.errors import BenchError

logger = logging.getLogger(__name__)

#: The shipped student (docs/haaqinet-distill.md): a smaller ``auditory`` front end (24 bands from a 32-ms
#: window every 80 ms; one conv stage and no transformer layer) and a narrow head without the BLSTM.
STUDENT_ARGS = {
    "frontend": "auditory",
    "frontend_args": {"n_bands": 24, "n_fft": 512, "hop": 1280, "dim": 48, "n_layers": 1, "n_heads": 2,
                      "ffn_dim": 96, "stride": 2},
    "adapter_dim": 48, "lstm_hidden": 24, "attention_dim": 48, "attention_heads": 2, "dropout": 0.1, "rnn": "none",
}


@dataclass
class DistillConfig:
    """Distillation settings (all recorded in the student's sidecar)."""

    teacher: str = "teacher"
    student_args: dict = field(default_factory=lambda: copy.deepcopy(STUDENT_ARGS))
    alpha: float = 0.3
    frame_weight: float = 1.0
    hint_weight: float = 0.1
    ema: float = 0.995
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 150
    patience: int = 8
    max_seconds: float | None = None
    max_train_items: int | None = None
    device: str = "cpu"
    seed: int = 0
    workers: int = 1
    chunk_items: int = 1024
    withhold_input_level: float = 0.25  # students of an input_level teacher: share trained with the level unknown

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- the loss ---------------------------------------------------------------------------------
def pool_time(x, n: int):
    """Average-pool (B, T) or (B, T, D) over time to ``n`` steps (``torch`` adaptive pooling; identity if T == n)."""
    import torch.nn.functional as F

    if x.shape[1] == n:
        return x
    if x.dim() == 2:
        return F.adaptive_avg_pool1d(x.unsqueeze(1), n).squeeze(1)
    return F.adaptive_avg_pool1d(x.transpose(1, 2), n).transpose(1, 2)


def distill_loss(s_clip, s_frames, t_clip, t_frames, label, *, alpha: float = 0.5, frame_weight: float = 1.0,
                 s_hidden=None, t_hidden=None, hint_weight: float = 0.0):
    """The distillation loss (module docstring); returns ``(loss, {"label", "teacher", "frame", "hint"})``.

    Args:
        s_clip, t_clip, label: (B,) student, teacher and HAAQI scores.
        s_frames, t_frames: (B, T_s) and (B, T_t) frame scores (any two frame rates).
        s_hidden, t_hidden: optional (B, T_s, D) projected student and (B, T_t, D) teacher encoder outputs.
    """
    k = min(s_frames.shape[1], t_frames.shape[1])
    sf, tf = pool_time(s_frames, k), pool_time(t_frames.to(s_frames.dtype), k)
    clip_label = (s_clip - label).square().mean()
    clip_teacher = (s_clip - t_clip).square().mean()
    frame_label = (sf - label.unsqueeze(1)).square().mean()
    frame_teacher = (sf - tf).square().mean()
    loss = alpha * clip_label + (1 - alpha) * clip_teacher
    frame = alpha * frame_label + (1 - alpha) * frame_teacher
    loss = loss + frame_weight * frame
    hint = s_clip.new_zeros(())
    if hint_weight and s_hidden is not None and t_hidden is not None:
        kh = min(s_hidden.shape[1], t_hidden.shape[1])
        hint = (pool_time(s_hidden, kh) - pool_time(t_hidden.to(s_hidden.dtype), kh)).square().mean()
        loss = loss + hint_weight * hint
    return loss, {"label": float(clip_label.detach()), "teacher": float(clip_teacher.detach()),
                  "frame": float(frame.detach()), "hint": float(hint.detach())}


# -- teacher targets and student features -----------------------------------------------------
def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class _Capture:
    """Forward hook keeping the input of a module (the encoder output entering ``adapter``)."""

    def __init__(self, module):
        self.value = None
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        self.value = inputs[0]

    def remove(self):
        self.handle.remove()


def _fixed_stage_key(model) -> str:
    fe = model.frontend
    key = {"frontend": model.model_args["frontend"], "n_bands": fe.n_bands, "n_fft": fe.N_FFT, "hop": fe.HOP,
           "bands": hashlib.sha256(fe.bands.cpu().numpy().tobytes()).hexdigest()[:12]}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def _cached(path: Path, item_ids, build, log):
    """``build()`` -> dict of arrays (first axis = items), cached in an ``.npz`` keyed by the item ids."""
    ids = np.asarray(list(item_ids))
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if np.array_equal(z["item_id"], ids):
                    return {k: z[k] for k in z.files if k != "item_id"}
        except Exception as exc:  # noqa: BLE001 - a torn or stale cache is rebuilt
            log(f"ignoring unreadable cache {path}: {exc}")
    out = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.npz")
    np.savez(tmp, item_id=ids, **out)
    os.replace(tmp, path)
    return out


def prepare_arrays(teacher, student, data_folder: Path, df, *, name: str, cfg: DistillConfig, teacher_sha: str,
                   log=logger.info) -> dict:
    """Teacher outputs and student features of the items in ``df``, computed once (chunks) and cached.

    Returns:
        dict with ``features`` (n, T_s, F) float16, ``audiogram`` (n, 8), ``spl`` (n,), ``input_spl`` (n,: the
        clean music's presentation level, which an ``input_level`` teacher is given), ``label`` (n,),
        ``t_clip`` (n,), ``t_frames`` (n, T_t) and ``t_hidden`` (n, T_t, D_t) float16 (the teacher's encoder
        output, used when ``cfg.hint_weight`` > 0; cached with the scores either way).
    """
    import torch

    from haaqinet import data
    from haaqinet.train import precompute_features

    folder = Path(data_folder)
    cache = folder / "cache" / "distill"
    aud = data.audiogram_array(df)
    spl = df["judged_db_spl"].to_numpy(np.float32)
    input_spl = df["spl_db"].to_numpy(np.float32)
    waves: dict = {}

    def chunks():
        for i in range(0, len(df), cfg.chunk_items):
            if i not in waves:
                waves.clear()
                waves[i] = data.model_inputs(folder, df.iloc[i:i + cfg.chunk_items], workers=cfg.workers)
            yield i, waves[i]

    def build_teacher():
        t0 = time.perf_counter()
        teacher.eval().to(cfg.device)
        clip = np.zeros(len(df), np.float32)
        frames, hidden = None, None
        capture = _Capture(teacher.adapter) if _single(teacher) else None   # an ensemble has no one encoder
        try:
            with torch.inference_mode():
                for i, x in chunks():
                    for j in range(0, len(x), 128):
                        sl = slice(i + j, i + j + min(128, len(x) - j))
                        a = torch.as_tensor(aud[sl], device=cfg.device)
                        s = torch.as_tensor(spl[sl], device=cfg.device)
                        c, f = teacher(torch.as_tensor(x[j:j + 128], device=cfg.device), a, s,
                                       input_spl_db=torch.as_tensor(input_spl[sl], device=cfg.device))
                        if frames is None:
                            frames = np.zeros((len(df), f.shape[1]), np.float32)
                            if capture is not None:
                                hidden = np.zeros((len(df), f.shape[1], capture.value.shape[2]), np.float16)
                        clip[sl], frames[sl] = c.cpu().numpy(), f.cpu().numpy()
                        if capture is not None:
                            hidden[sl] = capture.value.cpu().numpy()
                    log(f"teacher outputs ({name}): {min(i + cfg.chunk_items, len(df))}/{len(df)} "
                        f"({time.perf_counter() - t0:.0f} s)")
        finally:
            if capture is not None:
                capture.remove()
        out = {"t_clip": clip, "t_frames": frames}
        return out if hidden is None else {**out, "t_hidden": hidden}

    def build_features():
        t0 = time.perf_counter()
        feats = None
        for i, x in chunks():
            f = precompute_features(student, x, aud[i:i + len(x)], spl[i:i + len(x)], device=cfg.device)
            if feats is None:
                feats = np.zeros((len(df),) + f.shape[1:], np.float16)
            feats[i:i + len(x)] = f
            log(f"student features ({name}): {min(i + cfg.chunk_items, len(df))}/{len(df)} "
                f"({time.perf_counter() - t0:.0f} s)")
        return {"features": feats}

    ids = df["item_id"].tolist()
    targets = _cached(cache / f"teacher-{teacher_sha[:12]}-{name}.npz", ids, build_teacher, log)
    feats = _cached(cache / f"features-{_fixed_stage_key(student)}-{name}.npz", ids, build_features, log)
    return {**feats, **targets, "audiogram": aud, "spl": spl, "input_spl": input_spl,
            "label": df["haaqi"].to_numpy(np.float32)}


# -- training ---------------------------------------------------------------------------------
def fit_student(student, teacher_dim: int | None, train: dict, val: dict, cfg: DistillConfig,
                log=logger.info) -> dict:
    """Train ``student`` in place on the arrays of :func:`prepare_arrays`; returns the history.

    Early stopping and model choice use the validation MSE against the HAAQI labels. With ``cfg.ema``
    (default 0.995 per step) the validated and kept weights are an exponential moving average of the
    trained ones.
    """
    import torch

    from haaqinet.evaluate import agreement
    from haaqinet.train import (EarlyStopping, TrainConfig, _lr_lambda, predict_features, weight_average,
                                withhold_input_levels)

    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    train = {**train, "input_spl": withhold_input_levels(train["input_spl"], cfg.withhold_input_level, cfg.seed)}
    tensors = {k: torch.as_tensor(v, device=device) for k, v in train.items()}
    n = len(tensors["label"])
    if n == 0:
        raise BenchError("no training items")
    use_hint = bool(cfg.hint_weight) and "t_hidden" in tensors
    projection = None
    params = [p for p in student.parameters() if p.requires_grad]
    if use_hint:
        projection = torch.nn.Linear(student.frontend.dim, teacher_dim).to(device)
        params += list(projection.parameters())
    capture = _Capture(student.adapter)
    ema = weight_average(student, cfg.ema)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    plan = {"total_steps": cfg.epochs * steps_per_epoch}
    sched_cfg = TrainConfig(warmup_steps=cfg.warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(sched_cfg, plan))
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    stopper, history = EarlyStopping(cfg.patience, cfg.max_seconds, log), []
    t0 = time.perf_counter()
    try:
        for epoch in range(cfg.epochs):
            student.train()
            sums = {"loss": 0.0, "label": 0.0, "teacher": 0.0, "frame": 0.0, "hint": 0.0}
            for idx in torch.randperm(n, generator=gen).split(cfg.batch_size):
                idx = idx.to(device)
                clip, frames = student(None, tensors["audiogram"][idx], tensors["spl"][idx],
                                       features=tensors["features"][idx].float(),
                                       input_spl_db=tensors["input_spl"][idx])
                s_hidden = projection(capture.value) if use_hint else None
                loss, parts = distill_loss(
                    clip, frames, tensors["t_clip"][idx], tensors["t_frames"][idx], tensors["label"][idx],
                    alpha=cfg.alpha, frame_weight=cfg.frame_weight, s_hidden=s_hidden,
                    t_hidden=tensors["t_hidden"][idx] if use_hint else None, hint_weight=cfg.hint_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                if ema is not None:
                    ema.update_parameters(student)
                sums["loss"] += float(loss.detach()) * len(idx)
                for k, v in parts.items():
                    sums[k] += v * len(idx)
            judged = student if ema is None else ema.module
            pred = predict_features(judged, val["features"], val["audiogram"], val["spl"], val["input_spl"],
                                    batch_size=4 * cfg.batch_size, device=cfg.device)
            val_stats = agreement(val["label"], pred)
            val_teacher = agreement(val["t_clip"], pred)
            elapsed = time.perf_counter() - t0
            if epoch == 0 and cfg.max_seconds is not None:  # fit the cosine decay into the time limit
                planned = min(cfg.epochs, max(2, int(cfg.max_seconds / elapsed)))
                plan["total_steps"] = planned * steps_per_epoch
                log(f"planning {planned} epochs in {cfg.max_seconds:g} s")
            row = {"epoch": epoch + 1, **{f"train_{k}": v / n for k, v in sums.items()}, "val": val_stats,
                   "val_vs_teacher_lcc": val_teacher["lcc"], "seconds": round(elapsed, 1)}
            history.append(row)
            log(f"epoch {epoch + 1}: loss {row['train_loss']:.5f} (label {row['train_label']:.4f}, teacher "
                f"{row['train_teacher']:.4f}, frame {row['train_frame']:.4f}"
                + (f", hint {row['train_hint']:.4f}" if use_hint else "")
                + f"); val MSE {val_stats['mse']:.5f} LCC {val_stats['lcc']:.4f} "
                f"(LCC with teacher {val_teacher['lcc']:.4f}) ({elapsed:.0f} s)")
            if stopper.update(val_stats["mse"], judged, epoch, elapsed):
                break
    finally:
        capture.remove()
    stopper.restore(student)
    return {"epochs": history, "best_val_mse": stopper.best, "train_seconds": round(time.perf_counter() - t0, 1)}


def _single(model) -> bool:
    """Whether ``model`` is one network, not a mean of several (:class:`haaqinet.ensemble.MeanOf`)."""
    from haaqinet.ensemble import MeanOf

    return not isinstance(model, MeanOf)


def model_flops(model, seconds: float = 10.0) -> dict:
    """FLOPs of one forward pass on a ``seconds`` clip at 16 kHz (batch 1).

    ``counted``: what :class:`torch.utils.flop_counter.FlopCounterMode` sees (matrix products and
    convolutions); ``lstm`` and ``fft``: added analytically, since the counter does not see them
    (LSTM: ``2 * 4 * h * (in + h)`` per step and direction; real FFT: ``2.5 * N * log2 N`` per frame).
    Element-wise operations are not counted. An ensemble's FLOPs are its members' summed.
    """
    import torch

    if not _single(model):
        parts = [model_flops(member, seconds) for member in model.members]
        return {**{k: sum(p[k] for p in parts) for k in ("counted", "lstm", "fft", "total")}, "clip_s": seconds}
    from torch.utils.flop_counter import FlopCounterMode

    n = int(round(seconds * 16000))
    x = 0.05 * torch.randn(1, n, generator=torch.Generator().manual_seed(0))
    a, s = torch.full((1, 8), 40.0), torch.tensor([65.0])
    model = model.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        _, frames = model(x, a, s)
    counted = int(counter.get_total_flops())
    t = frames.shape[1]
    lstm = 0
    if getattr(model, "blstm", None) is not None:
        lstm = 2 * 2 * 4 * model.blstm.hidden_size * (model.blstm.input_size + model.blstm.hidden_size) * t
    fe = model.frontend
    fft = 0
    if hasattr(fe, "N_FFT") and hasattr(fe, "HOP"):
        fft = int(2.5 * fe.N_FFT * math.log2(fe.N_FFT) * (n // fe.HOP + 1))  # STFT frames (centred)
    return {"counted": counted, "lstm": int(lstm), "fft": fft, "total": counted + int(lstm) + fft,
            "clip_s": seconds}


def teacher_path(teacher: str | Path | None) -> Path:
    from haaqinet.predict import resolve_checkpoint

    return resolve_checkpoint(teacher or "teacher")


def distill(data_folder: Path, out_path: Path, cfg: DistillConfig, *, log=logger.info, eval_splits=None,
            eval_max_train_items: int | None = 2000):
    """Distil a student from ``cfg.teacher`` on a ``make-data`` set; evaluate both; save the student.

    The student's sidecar holds its metrics per split, SPL band and severity (from
    :func:`haaqinet.evaluate.evaluate`, as for a trained model), the teacher's metrics on the same
    items, the LCC drop per split, parameter and FLOP counts of both, the distillation settings,
    the teacher's file hash and the epoch history.

    Returns:
        (student model, sidecar metrics dict).
    """
    import torch

    from haaqinet import data
    from haaqinet.checkpoint import load_checkpoint, save_checkpoint
    from haaqinet.evaluate import EVAL_SPLITS, evaluate
    from haaqinet.model import HAAQINet, count_parameters
    from haaqinet.train import hardware, recipe_hash

    t_start = time.perf_counter()
    data_folder = Path(data_folder)
    tpath = teacher_path(cfg.teacher)
    teacher = load_checkpoint(tpath, map_location=cfg.device)
    tsha = file_sha256(tpath)
    if not _single(teacher) and cfg.hint_weight:
        log(f"{tpath.name} is an ensemble of {len(teacher.members)} networks: no one encoder output to hint "
            f"from, so the hint term is off (hint_weight 0)")
        cfg = dataclasses.replace(cfg, hint_weight=0.0)
    args = copy.deepcopy(cfg.student_args)
    if getattr(teacher, "input_level", False) and "input_level" not in args:
        args["input_level"] = True
        log(f"{tpath.name} takes the clean music's presentation level: so does the student")
    torch.manual_seed(cfg.seed)
    try:
        student = HAAQINet(**args).to(cfg.device)
    except TypeError as exc:
        raise BenchError(f"student arguments do not fit HAAQINet: {exc}") from None
    if not hasattr(student.frontend, "precompute"):
        raise BenchError(f"the student's {args.get('frontend', 'mel')} front end has no fixed stage to cache; "
                         f"distillation needs one with precompute (auditory)")
    n_t, n_s = count_parameters(teacher), count_parameters(student)
    log(f"teacher {tpath.name} ({n_t:,} parameters), student {n_s:,} parameters "
        f"({100 * (1 - n_s / n_t):.1f} % fewer)")
    recipe = data.read_recipe(data_folder)
    train_df = data.load_labels(data_folder, splits=["train"])
    if cfg.max_train_items is not None and len(train_df) > cfg.max_train_items:
        train_df = train_df.sample(cfg.max_train_items, random_state=cfg.seed).sort_values("item_id")
        train_df = train_df.reset_index(drop=True)
    val_df = data.load_labels(data_folder, splits=["val"])
    if len(val_df) == 0:
        log("no validation items: early stopping on a 10 % slice of the training items")
        val_df = train_df.sample(max(1, len(train_df) // 10), random_state=cfg.seed).reset_index(drop=True)
    log(f"{len(train_df)} training and {len(val_df)} validation items")
    t0 = time.perf_counter()
    train = prepare_arrays(teacher, student, data_folder, train_df, name=f"train-{len(train_df)}", cfg=cfg,
                           teacher_sha=tsha, log=log)
    val = prepare_arrays(teacher, student, data_folder, val_df, name=f"val-{len(val_df)}", cfg=cfg,
                         teacher_sha=tsha, log=log)
    log(f"teacher outputs and student features ready in {time.perf_counter() - t0:.0f} s")
    history = fit_student(student, teacher.frontend.dim if _single(teacher) else None, train, val, cfg, log=log)
    del train, val
    student = student.cpu().eval()
    save_checkpoint(out_path, student, metrics={"history": history}, extra={"distillation": cfg.as_dict()})
    splits = eval_splits or EVAL_SPLITS
    log("evaluating the student and the teacher on the same items")
    rep_s, _ = evaluate(student.to(cfg.device), data_folder, splits=splits, device=cfg.device,
                        workers=cfg.workers, max_train_items=eval_max_train_items)
    rep_t, _ = evaluate(teacher, data_folder, splits=splits, device=cfg.device, workers=cfg.workers,
                        max_train_items=eval_max_train_items)
    student, teacher = student.cpu().eval(), teacher.cpu().eval()
    drop = {s: {"teacher_lcc": rep_t["per_split"][s]["lcc"], "student_lcc": m["lcc"],
                "lcc_drop": rep_t["per_split"][s]["lcc"] - m["lcc"]} for s, m in rep_s["per_split"].items()}
    f_t, f_s = model_flops(teacher), model_flops(student)
    size = {"teacher_parameters": n_t, "student_parameters": n_s,
            "parameter_reduction": 1 - n_s / n_t, "teacher_flops_10s": f_t, "student_flops_10s": f_s,
            "flop_reduction": 1 - f_s["total"] / f_t["total"]}
    metrics = {"per_split": rep_s["per_split"], "per_spl": rep_s["per_spl"], "per_severity": rep_s["per_severity"],
               "clean_nalr": rep_s["clean_nalr"], "targets": rep_s["targets"], "history": history,
               "teacher": {"per_split": rep_t["per_split"], "per_spl": rep_t["per_spl"],
                           "per_severity": rep_t["per_severity"]},
               "lcc_drop": drop, "size": size}
    extra = {
        "distillation": cfg.as_dict(),
        "teacher": {"path": str(tpath), "file": tpath.name, "sha256": tsha, "model_args": teacher.model_args,
                    "n_parameters": n_t},
        "data": {"folder": str(data_folder), "recipe_sha256_16": recipe_hash(recipe),
                 "data_version": recipe["data_version"], "n_train": len(train_df), "n_val": len(val_df),
                 "labels": data.summarise(data.load_labels(data_folder, ok_only=False)),
                 "n_sources": len(recipe["sources"])},
        "training_seconds": round(time.perf_counter() - t_start, 1), "hardware": hardware(cfg.device),
        "source_commit": os.environ.get("HAAQINET_GIT_SHA"),
    }
    save_checkpoint(out_path, student, metrics=metrics, extra=extra)
    return student, metrics
