"""Training HAAQI-Net on a ``make-data`` set.

Inputs are cached once (16-kHz judged signals, :func:`haaqinet.data.model_inputs`),
held in memory (on the GPU when there is one) and batched; the loss is the
paper's clip + frame MSE (:func:`haaqinet.model.haaqinet_loss`). Optimiser: AdamW
with a linear warm-up and a cosine decay over the planned epochs (with
``max_seconds``, as many as the first epoch's time allows), gradient clipping at 1.0; optionally each batch is a random excerpt of its items
(``crop_s_min``..item length, labels unchanged). After each epoch the validation split is scored; training stops
when its MSE has not improved for ``patience`` epochs, after ``epochs``, or after
``max_seconds``, and the best epoch's weights are kept. The checkpoint's sidecar
records the metrics of every split, the data recipe and its version, the git
commit, the training time and the hardware.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmark.errors import BenchError

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Training settings (all recorded in the checkpoint's sidecar)."""

    frontend: str = "auditory"
    frontend_args: dict = field(default_factory=dict)
    model_args: dict = field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 300
    patience: int = 5
    max_seconds: float | None = None
    max_train_items: int | None = None
    crop_s_min: float | None = None
    device: str = "cpu"
    seed: int = 0
    workers: int = 1
    high_weight: float = 0.0
    ema: float = 0.0            # > 0: validate and keep an exponential moving average of the weights
    init: str | None = None     # warm start: a checkpoint (path or name) whose architecture and weights are the start
    withhold_input_level: float = 0.25  # input_level networks: share of training items trained with the level unknown

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def hardware(device: str) -> dict:
    """CPU, GPU and thread counts, for the sidecar."""
    import torch

    out = {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def recipe_hash(recipe: dict) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


FEATURE_CHUNK = 4096   # items whose waveforms are held at once while their front-end features are computed


def _arrays(folder, df, workers, *, model=None, device: str = "cpu"):
    """(inputs, audiograms, judged levels, labels, the clean music's presentation levels) of ``df``'s items,
    the levels in dB SPL. With a ``model`` whose front end has a
    fixed first stage (``precompute``), the inputs are its features, computed :data:`FEATURE_CHUNK` items at a
    time so that the waveforms of a large set are never all in memory (62,000 4-s items: 16 GB)."""
    from haaqinet import data

    audiograms, spl = data.audiogram_array(df), df["judged_db_spl"].to_numpy(np.float32)
    labels, input_spl = df["haaqi"].to_numpy(np.float32), df["spl_db"].to_numpy(np.float32)
    if model is None or not hasattr(model.frontend, "precompute"):
        return data.model_inputs(folder, df, workers=workers), audiograms, spl, labels, input_spl
    features = None
    for i in range(0, len(df), FEATURE_CHUNK):
        sl = slice(i, i + FEATURE_CHUNK)
        chunk = precompute_features(model, data.model_inputs(folder, df.iloc[sl], workers=workers), audiograms[sl],
                                    spl[sl], device=device)
        if features is None:   # filled in place: no second copy of the whole set's features
            features = np.empty((len(df),) + chunk.shape[1:], dtype=chunk.dtype)
        features[sl] = chunk
    return features, audiograms, spl, labels, input_spl


def withhold_input_levels(input_spl_db: np.ndarray, share: float, seed: int) -> np.ndarray:
    """A copy of the presentation levels with a fixed, seeded ``share`` of them NaN (unknown), so that an
    ``input_level`` network learns both with and without the level."""
    if not 0.0 <= share <= 1.0:
        raise BenchError(f"the share of withheld input levels must be in [0, 1], got {share}")
    out = np.array(input_spl_db, dtype=np.float32)
    out[np.random.default_rng([seed, 61]).random(len(out)) < share] = np.nan
    return out


def initial_model(cfg: TrainConfig):
    """The model training starts from, and the warm start's provenance (None without ``cfg.init``).

    With ``cfg.init`` the architecture and weights are the checkpoint's; asking for another front end or
    model options as well is an error rather than silently ignored.
    """
    from haaqinet.model import HAAQINet

    if cfg.init is None:
        return HAAQINet(frontend=cfg.frontend, frontend_args=cfg.frontend_args, **cfg.model_args), None
    from haaqinet.checkpoint import load_checkpoint
    from haaqinet.predict import resolve_checkpoint

    if cfg.frontend_args or cfg.model_args:
        raise BenchError("--init takes the architecture from the checkpoint; leave out --frontend-arg and "
                         "--model-arg")
    path = resolve_checkpoint(cfg.init)
    if not path.is_file():
        raise BenchError(f"the checkpoint to start from does not exist: {path}")
    from haaqinet.ensemble import require_network

    model = require_network(load_checkpoint(path), "--init", path)
    if model.model_args.get("frontend") != cfg.frontend:
        raise BenchError(f"--init {path.name} has the {model.model_args.get('frontend')!r} front end, not "
                         f"{cfg.frontend!r}; pass --frontend {model.model_args.get('frontend')}")
    return model, {"path": str(path), "sha256_12": hashlib.sha256(path.read_bytes()).hexdigest()[:12]}


def precompute_features(model, waveforms, audiograms, spl_db, *, batch_size: int = 128, device: str = "cpu",
                        dtype=np.float16) -> np.ndarray:
    """The front end's fixed features of every item (front ends with ``precompute``, e.g. ``auditory``).

    Returns:
        (n_items, T, F) array (float16 by default: the maps are O(1), 1e-3 resolution is plenty).
    """
    import torch

    out = None
    with torch.inference_mode():
        for i in range(0, len(waveforms), batch_size):
            sl = slice(i, i + batch_size)
            f = model.precompute(torch.as_tensor(np.asarray(waveforms[sl], dtype=np.float32), device=device),
                                 torch.as_tensor(np.asarray(audiograms[sl], dtype=np.float32), device=device),
                                 torch.as_tensor(np.asarray(spl_db[sl], dtype=np.float32), device=device))
            if out is None:
                out = np.zeros((len(waveforms),) + tuple(f.shape[1:]), dtype=dtype)
            out[sl] = f.cpu().numpy()
    return out


def predict_features(model, features, audiograms, spl_db, input_spl_db=None, *, batch_size: int = 128,
                     device: str = "cpu"):
    """Clip scores from precomputed features (see :func:`precompute_features`): float64 (n_items,).

    ``input_spl_db``: optional (n_items,) clean-music presentation levels (NaN: unknown; ``input_level`` networks).
    """
    import torch

    model = model.to(device).eval()
    out = np.zeros(len(features))
    with torch.inference_mode():
        for i in range(0, len(features), batch_size):
            sl = slice(i, i + batch_size)
            f = torch.as_tensor(np.asarray(features[sl]), device=device).float()
            li = None if input_spl_db is None else torch.as_tensor(np.asarray(input_spl_db[sl]), device=device)
            clip, _ = model(None, torch.as_tensor(np.asarray(audiograms[sl]), device=device),
                            torch.as_tensor(np.asarray(spl_db[sl]), device=device), features=f, input_spl_db=li)
            out[sl] = clip.double().cpu().numpy()
    return out



class EarlyStopping:
    """Keep the weights of the best validation MSE; say when to stop.

    Stops after ``patience`` epochs without improvement, or when the next
    epoch (at the mean epoch time so far) would pass ``max_seconds``.
    """

    def __init__(self, patience: int, max_seconds: float | None, log, best_mse: float = math.inf,
                 best_state: dict | None = None):
        self.patience, self.max_seconds, self.log = patience, max_seconds, log
        self.best, self.best_state, self.bad = best_mse, best_state, 0

    def update(self, val_mse: float, model, epoch: int, elapsed_s: float) -> bool:
        """Record epoch ``epoch`` (0-based); True when training should stop."""
        if val_mse < self.best:
            self.best, self.best_state, self.bad = val_mse, copy.deepcopy(model.state_dict()), 0
        else:
            self.bad += 1
        if self.bad >= self.patience:
            self.log(f"early stop: no validation improvement for {self.patience} epochs")
            return True
        if self.max_seconds is not None and elapsed_s * (epoch + 2) / (epoch + 1) > self.max_seconds:
            self.log(f"stopping: the next epoch would pass max_seconds={self.max_seconds:g}")
            return True
        return False

    def restore(self, model) -> None:
        """Load the best weights into ``model`` (if any epoch improved on the start)."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)

def weight_average(model, decay: float):
    """An exponential moving average of ``model``'s weights (``update_parameters`` after each step), or
    None when ``decay`` is 0. Validating and keeping the average smooths the epochs."""
    import torch

    if not decay:
        return None
    if not 0.0 < decay < 1.0:
        raise BenchError(f"the weight-average decay must be in (0, 1), got {decay}")
    return torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay), use_buffers=True)


def _lr_lambda(cfg: TrainConfig, plan: dict):
    """Linear warm-up, then cosine decay to 2 % over ``plan["total_steps"]`` (which may be revised)."""
    def f(step):
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        total_steps = plan["total_steps"]
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress))
    return f


def fit(model, train_arrays, val_arrays, cfg: TrainConfig, log=logger.info, *, keep_start: bool = False) -> dict:
    """Train ``model`` in place; returns the history (loss and validation metrics per epoch).

    ``train_arrays`` and ``val_arrays``: (inputs, audiograms, judged levels, labels[, input levels]).
    ``keep_start`` (a warm start): the starting weights are validated first and kept unless an epoch beats them.
    """
    import torch

    from haaqinet.evaluate import agreement
    from haaqinet.model import haaqinet_loss
    from haaqinet.predict import predict_arrays

    use_features = np.ndim(train_arrays[0]) == 3  # (n, T, F): precomputed front-end features
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    x, a, s, y = (torch.as_tensor(v, device=device) for v in train_arrays[:4])
    li = torch.as_tensor(train_arrays[4], device=device) if len(train_arrays) > 4 else None
    val_li = val_arrays[4] if len(val_arrays) > 4 else None
    n = len(y)
    if n == 0:
        raise BenchError("no training items")
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    plan = {"total_steps": cfg.epochs * steps_per_epoch}
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, plan))
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    ema = weight_average(model, cfg.ema)

    def validate(judged):
        if use_features:
            pred = predict_features(judged, *val_arrays[:3], val_li, batch_size=4 * cfg.batch_size,
                                    device=cfg.device)
        else:
            pred = predict_arrays(judged, *val_arrays[:3], batch_size=4 * cfg.batch_size, device=cfg.device,
                                  input_spl_db=val_li)
        return agreement(val_arrays[3], pred)

    stopper, history = EarlyStopping(cfg.patience, cfg.max_seconds, log), []
    if keep_start:
        start = validate(model)
        stopper.best, stopper.best_state = start["mse"], copy.deepcopy(model.state_dict())
        history.append({"epoch": 0, "train_loss": None, "val": start, "seconds": 0.0})
        log(f"start: val MSE {start['mse']:.5f} LCC {start['lcc']:.4f} SRCC {start['srcc']:.4f}")
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        total = 0.0
        for idx in torch.randperm(n, generator=gen).split(cfg.batch_size):
            idx = idx.to(device)
            xb = x[idx].float() if use_features else x[idx]
            if cfg.crop_s_min is not None:  # random excerpt of the item (one length per batch), same label
                per_s = model.frontend.sample_rate_hz / model.frontend.HOP if use_features else 16000
                shortest = min(int(cfg.crop_s_min * per_s), xb.shape[1])
                length = int(torch.randint(shortest, xb.shape[1] + 1, (1,), generator=gen))
                start = int(torch.randint(0, xb.shape[1] - length + 1, (1,), generator=gen))
                xb = xb[:, start:start + length]
            lib = None if li is None else li[idx]
            if use_features:
                clip, frames = model(None, a[idx], s[idx], features=xb, input_spl_db=lib)
            else:
                clip, frames = model(xb, a[idx], s[idx], input_spl_db=lib)
            loss = haaqinet_loss(clip, frames, y[idx], high_weight=cfg.high_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            total += float(loss.detach()) * len(idx)
        judged = model if ema is None else ema.module
        val = validate(judged)
        elapsed = time.perf_counter() - t0
        if epoch == 0 and cfg.max_seconds is not None:  # fit the cosine decay into the time limit
            planned = min(cfg.epochs, max(2, int(cfg.max_seconds / elapsed)))
            plan["total_steps"] = planned * steps_per_epoch
            log(f"planning {planned} epochs in {cfg.max_seconds:g} s")
        history.append({"epoch": epoch + 1, "train_loss": total / n, "val": val, "seconds": round(elapsed, 1)})
        log(f"epoch {epoch + 1}: train loss {total / n:.5f}, val MSE {val['mse']:.5f} LCC {val['lcc']:.4f} "
            f"SRCC {val['srcc']:.4f} ({elapsed:.0f} s)")
        if stopper.update(val["mse"], judged, epoch, elapsed):
            break
    stopper.restore(model)
    return {"epochs": history, "best_val_mse": stopper.best, "train_seconds": round(time.perf_counter() - t0, 1)}


def train(data_folder: Path, out_path: Path, cfg: TrainConfig, *, log=logger.info, eval_splits=None):
    """Train on the "train" split, stop early on "val", evaluate every split, save the checkpoint.

    Returns:
        (model, sidecar metrics dict).
    """
    import torch

    from haaqinet import data
    from haaqinet.checkpoint import save_checkpoint
    from haaqinet.evaluate import EVAL_SPLITS, evaluate

    t_start = time.perf_counter()
    recipe = data.read_recipe(data_folder)
    train_df = data.load_labels(data_folder, splits=["train"])
    if cfg.max_train_items is not None and len(train_df) > cfg.max_train_items:
        train_df = train_df.sample(cfg.max_train_items, random_state=cfg.seed).reset_index(drop=True)
    val_df = data.load_labels(data_folder, splits=["val"])
    if len(val_df) == 0:
        log("no validation items: early stopping on a 10 % slice of the training items")
        val_df = train_df.sample(max(1, len(train_df) // 10), random_state=cfg.seed)
    torch.manual_seed(cfg.seed)
    model, init = initial_model(cfg)
    model = model.to(cfg.device)
    log(f"{len(train_df)} training and {len(val_df)} validation items; caching inputs")
    t0 = time.perf_counter()
    train_arrays = _arrays(data_folder, train_df, cfg.workers, model=model, device=cfg.device)
    train_arrays = train_arrays[:4] + (withhold_input_levels(train_arrays[4], cfg.withhold_input_level, cfg.seed),)
    val_arrays = _arrays(data_folder, val_df, cfg.workers, model=model, device=cfg.device)
    kind = "front-end features" if np.ndim(train_arrays[0]) == 3 else "inputs"
    log(f"{kind} ready in {time.perf_counter() - t0:.0f} s")
    history = fit(model, train_arrays, val_arrays, cfg, log=log, keep_start=init is not None)
    save_checkpoint(out_path, model, metrics={"history": history}, extra={"training": cfg.as_dict()})  # in case
    model = model.cpu().eval() if cfg.device != "cpu" else model.eval()
    rep, _ = evaluate(model.to(cfg.device), data_folder, splits=eval_splits or EVAL_SPLITS, device=cfg.device,
                      workers=cfg.workers)
    metrics = {"per_split": rep["per_split"], "per_spl": rep["per_spl"], "per_severity": rep["per_severity"],
               "clean_nalr": rep["clean_nalr"], "targets": rep["targets"], "history": history}
    if getattr(model, "input_level", False):   # the same network where the clean music's level is not known
        withheld, _ = evaluate(model, data_folder, splits=eval_splits or EVAL_SPLITS, device=cfg.device,
                               workers=cfg.workers, input_level=False)
        metrics["input_level_withheld"] = {k: withheld[k] for k in ("per_split", "per_spl", "clean_nalr")}
    model = model.cpu().eval()
    extra = {
        "data": {"folder": str(data_folder), "recipe_sha256_16": recipe_hash(recipe),
                 "data_version": recipe["data_version"], "n_train": len(train_df), "n_val": len(val_df),
                 "labels": data.summarise(data.load_labels(data_folder, ok_only=False)),
                 "recipe": {k: v for k, v in recipe.items() if k != "sources"},
                 "n_sources": len(recipe["sources"])},
        "training": cfg.as_dict(), "init": init, "training_seconds": round(time.perf_counter() - t_start, 1),
        "hardware": hardware(cfg.device),
        "source_commit": os.environ.get("HAAQINET_GIT_SHA"),
    }
    save_checkpoint(out_path, model, metrics=metrics, extra=extra)
    return model, metrics
