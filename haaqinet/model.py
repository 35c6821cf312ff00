"""HAAQI-Net: a non-intrusive predictor of HAAQI (Wisnu et al., arXiv 2401.01145).

The network, with B clips of n samples at 16 kHz, a front end giving L hidden
states of width D at T frames, and the default sizes::

    waveform (B, n) --front end--> L x (B, T, D)
      --LayerNorm per layer, softmax-weighted sum--> (B, T, D)
      --adapter Linear(D -> 256)--> (B, T, 256)
      --concat [audiogram / 100 (8), (spl_db - 65) / 20 (1)] per frame--> (B, T, 265)
      --BLSTM(hidden 100, bidirectional)--> (B, T, 200)
      --Linear(200 -> 256), ReLU, Dropout(0.3)--> (B, T, 256)
      --MultiheadAttention(256, 16 heads), self-attention--> (B, T, 256)
      --Linear(256 -> 1), sigmoid--> frame scores (B, T)
      --mean over (valid) frames--> clip score (B,)

Conditioning inputs, normalised so they are O(1) like the features:

* ``audiogram_db_hl``: (B, 8) hearing thresholds in dB HL at
  :data:`AUDIOGRAM_FREQUENCIES_HZ`, divided by :data:`AUDIOGRAM_SCALE_DB` (100).
  The paper fed raw dB HL (values up to ~100 next to features of order 1).
* ``spl_db``: (B,) RMS level of the judged signal in dB SPL (the calibration
  of :mod:`benchmark.calibration`), as ``(spl_db - 65) / 20``. The paper had no
  level input; HAAQI depends on level for impaired listeners. Front ends with
  ``wants_calibrated_input`` (``mel``) also receive the waveform rescaled so its
  digital level encodes ``spl_db`` (:func:`haaqinet.frontends.calibrate_to_spl`).
* ``input_spl_db`` (networks built with ``input_level=True``, ``auditory`` front end
  only): (B,) the level in dB SPL at which the clean music is presented to the
  hearing aid (``bench run --spl``), NaN where it is not known. It enters once per
  clip, beside the front end's clip statistics, as two values: ``(input_spl_db -
  65) / 20`` (0 where unknown) and a known flag (1 or 0). HAAQI's reference is the
  clean music at that level; the judged signal alone cannot tell a level error
  before the hearing aid from the music itself (docs/haaqinet-data.md). Training
  withholds it for a fixed share of the items, so one network serves both cases.

The network is kept apart from training code; :mod:`haaqinet.checkpoint`
saves and rebuilds it from :attr:`HAAQINet.model_args`.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from benchmark.errors import BenchError
from haaqinet.frontends import calibrate_to_spl, calibration_gain, create_frontend

#: Audiogram frequencies expected by the model, in Hz.
AUDIOGRAM_FREQUENCIES_HZ = (250, 500, 1000, 2000, 3000, 4000, 6000, 8000)
#: dB HL that maps to 1.0 in the audiogram input.
AUDIOGRAM_SCALE_DB = 100.0
#: Level normalisation: ``(spl_db - SPL_CENTER_DB) / SPL_SCALE_DB``.
SPL_CENTER_DB = 65.0
SPL_SCALE_DB = 20.0
#: Values per clip that ``input_level=True`` adds to the front end's clip statistics.
INPUT_LEVEL_VALUES = 2


def input_level_values(input_spl_db: torch.Tensor | None, batch: int, dtype=torch.float32) -> torch.Tensor:
    """(B, 2): ``[(input_spl_db - 65) / 20, 1]`` where the level is known, ``[0, 0]`` where it is NaN or
    ``input_spl_db`` is None."""
    if input_spl_db is None:
        return torch.zeros(batch, INPUT_LEVEL_VALUES, dtype=dtype)
    if tuple(input_spl_db.shape) != (batch,):
        raise BenchError(f"input_spl_db must be ({batch},) dB SPL (NaN: unknown); got {tuple(input_spl_db.shape)}")
    level = input_spl_db.to(dtype)
    known = torch.isfinite(level)
    if bool((known & ((level < 0) | (level > 130))).any()):
        raise BenchError("input_spl_db must be a presentation level in dB SPL between 0 and 130 (NaN: unknown)")
    return torch.stack([torch.where(known, (level - SPL_CENTER_DB) / SPL_SCALE_DB, torch.zeros_like(level)),
                        known.to(dtype)], dim=1)


class ScoreMap(nn.Module):
    """A monotone map of scores in (0, 1), learned when fine-tuning to ratings (``score_map=True``).

    ``g(s) = clip(lo + span * sigmoid(slope * logit(s) + shift), 0, 1)`` with ``slope = softplus(.) > 0`` and
    ``span = softplus(.) > 0``: non-decreasing, so it never reorders clips. Four parameters with a gradient
    everywhere (no clamped parameter that could stick); it starts as the identity. A rating scale is a
    monotone but non-linear function of quality with its own floor and ceiling; this is the least a model
    needs to learn to read HAAQI as a rating.
    """

    def __init__(self):
        super().__init__()
        self.slope_raw = nn.Parameter(torch.tensor(0.5413248546129181))  # softplus -> 1.0
        self.shift = nn.Parameter(torch.tensor(0.0))
        self.lo = nn.Parameter(torch.tensor(0.0))
        self.span_raw = nn.Parameter(torch.tensor(0.5413248546129181))   # softplus -> 1.0

    def forward(self, score: torch.Tensor) -> torch.Tensor:
        s = score.clamp(1e-6, 1 - 1e-6)
        y = self.lo + F.softplus(self.span_raw) * torch.sigmoid(F.softplus(self.slope_raw) * torch.logit(s)
                                                                + self.shift)
        return y.clamp(0.0, 1.0)


class HAAQINet(nn.Module):
    """HAAQI-Net with a pluggable front end.

    Args:
        frontend: registered front-end name (``mel``, ``beats``, ``hf``).
        frontend_args: keyword arguments of the front end (for ``beats`` and
            ``hf`` the path of the external weights).
        freeze_frontend: keep the front end's weights fixed (and in eval mode).
            ``None``: freeze front ends with external weights, train the others.
        adapter_dim: width after the adapter (256 in the paper).
        lstm_hidden: BLSTM hidden size per direction (100).
        attention_dim: width of the projection before self-attention (256).
        attention_heads: heads of the self-attention (16).
        dropout: dropout after the projection (0.3).
        use_spl: feed the normalised presentation level to the head.
        rnn: ``"lstm"`` (the paper's BLSTM) or ``"none"``: a per-frame ``Linear(adapter_dim + n_cond ->
            2 * lstm_hidden)`` and GELU instead, for small students whose front end already mixes time
            (no sequential step: cheaper on a CPU at batch 1).
        score_map: end with a learned monotone :class:`ScoreMap` of the clip and frame scores (added by
            ``bench haaqinet finetune --calibrate``: the output is then a rating on 0-1, not HAAQI).
        input_level: take the clean music's presentation level ``input_spl_db`` as an input (``auditory``
            front end only; see the module's docstring).
    """

    model_name = "HAAQINet"

    def __init__(self, frontend: str = "mel", frontend_args: dict | None = None,
                 freeze_frontend: bool | None = None, adapter_dim: int = 256, lstm_hidden: int = 100,
                 attention_dim: int = 256, attention_heads: int = 16, dropout: float = 0.3,
                 use_spl: bool = True, rnn: str = "lstm", score_map: bool = False, input_level: bool = False):
        super().__init__()
        if rnn not in ("lstm", "none"):
            raise BenchError(f"HAAQINet: rnn must be 'lstm' or 'none' (got {rnn!r})")
        if input_level and frontend != "auditory":
            raise BenchError(f"HAAQINet: input_level needs the auditory front end (got {frontend!r})")
        frontend_args = dict(frontend_args or {})
        self.input_level = bool(input_level)
        self.frontend = create_frontend(frontend, **frontend_args,
                                        **({"clip_inputs": INPUT_LEVEL_VALUES} if input_level else {}))
        if freeze_frontend is None:
            freeze_frontend = bool(self.frontend.external_weights)
        self._args = dict(frontend=frontend, frontend_args=frontend_args, freeze_frontend=bool(freeze_frontend),
                          adapter_dim=adapter_dim, lstm_hidden=lstm_hidden, attention_dim=attention_dim,
                          attention_heads=attention_heads, dropout=dropout, use_spl=use_spl)
        if rnn != "lstm":  # recorded only when not the default, so older model_args stay as they were
            self._args["rnn"] = rnn
        if self.input_level:
            self._args["input_level"] = True
        self.freeze_frontend = bool(freeze_frontend)
        self.use_spl = use_spl
        n_layers, dim = self.frontend.n_layers, self.frontend.dim
        self.layer_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(n_layers))
        self.layer_weights = nn.Parameter(torch.zeros(n_layers))  # softmax -> equal weights at start
        self.adapter = nn.Linear(dim, adapter_dim)
        n_cond = len(AUDIOGRAM_FREQUENCIES_HZ) + (1 if use_spl else 0)
        if rnn == "lstm":
            self.blstm = nn.LSTM(adapter_dim + n_cond, lstm_hidden, batch_first=True, bidirectional=True)
        else:
            self.blstm = None
            self.pointwise = nn.Linear(adapter_dim + n_cond, 2 * lstm_hidden)
        self.project = nn.Linear(2 * lstm_hidden, attention_dim)
        self.dropout = nn.Dropout(dropout)
        self.attention = nn.MultiheadAttention(attention_dim, attention_heads, batch_first=True)
        self.frame_score = nn.Linear(attention_dim, 1)
        self.score_map = None
        if score_map:
            self.add_score_map()
        if self.freeze_frontend:
            self.frontend.requires_grad_(False)
            self.frontend.eval()

    def add_score_map(self) -> ScoreMap:
        """Give the network a :class:`ScoreMap` (the identity at first) after its frame scores; returns it."""
        if self.score_map is None:
            self.score_map = ScoreMap().to(self.frame_score.weight.device)
            self._args["score_map"] = True
        return self.score_map

    @property
    def model_args(self) -> dict:
        """Constructor arguments: ``HAAQINet(**model.model_args)`` rebuilds the network."""
        return copy.deepcopy(self._args)

    @property
    def stores_frontend_weights(self) -> bool:
        """False when the front end's weights live in an external file and are not trained."""
        return not (self.frontend.external_weights and self.freeze_frontend)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_frontend:
            self.frontend.eval()  # a frozen encoder never uses dropout
        return self

    def frame_mask(self, n_samples: torch.Tensor, n_frames: int) -> torch.Tensor:
        """Valid frames: bool (B, n_frames), from each clip's unpadded length in samples."""
        lengths = torch.tensor([min(self.frontend.n_frames(int(n)), n_frames) for n in n_samples])
        return torch.arange(n_frames)[None, :] < lengths[:, None]  # (B, T)

    def _check(self, waveform_16k, audiogram_db_hl, spl_db) -> None:
        if waveform_16k.dim() != 2:
            raise BenchError(f"waveform_16k must be (B, n_samples); got {tuple(waveform_16k.shape)}")
        batch = waveform_16k.shape[0]
        if tuple(audiogram_db_hl.shape) != (batch, len(AUDIOGRAM_FREQUENCIES_HZ)):
            raise BenchError(f"audiogram_db_hl must be ({batch}, 8) dB HL at {AUDIOGRAM_FREQUENCIES_HZ} Hz; "
                             f"got {tuple(audiogram_db_hl.shape)}")
        if tuple(spl_db.shape) != (batch,):
            raise BenchError(f"spl_db must be ({batch},) dB SPL; got {tuple(spl_db.shape)}")
        if self.frontend.n_frames(waveform_16k.shape[1]) < 1:
            raise BenchError(
                f"clip of {waveform_16k.shape[1]} samples is too short for the {self._args['frontend']} front end"
            )

    def precompute(self, waveform_16k: torch.Tensor, audiogram_db_hl: torch.Tensor,
                   spl_db: torch.Tensor) -> torch.Tensor:
        """The front end's fixed (parameter-free) features, for front ends that have them (``auditory``).

        Training caches them once and passes them to :meth:`forward` as ``features``.
        """
        if not hasattr(self.frontend, "precompute"):
            raise BenchError(f"the {self._args['frontend']} front end has no fixed features to precompute")
        if self.frontend.wants_calibrated_input and getattr(self.frontend, "accepts_gain", False):
            return self.frontend.precompute(waveform_16k, audiogram_db_hl, calibration_gain(waveform_16k, spl_db))
        if self.frontend.wants_calibrated_input:
            waveform_16k = calibrate_to_spl(waveform_16k, spl_db)
        return self.frontend.precompute(waveform_16k, audiogram_db_hl)

    def encode(self, waveform_16k: torch.Tensor | None, spl_db: torch.Tensor,
               audiogram_db_hl: torch.Tensor | None = None, features: torch.Tensor | None = None,
               input_spl_db: torch.Tensor | None = None) -> torch.Tensor:
        """Front end and weighted layer sum: (B, n) -> (B, T, D).

        ``features``: the output of :meth:`precompute` instead of the waveform.
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_frontend):
            if self.input_level:
                batch = (features if features is not None else waveform_16k).shape[0]
                level = input_level_values(input_spl_db, batch).to(spl_db.device)
                feats = features if features is not None else self.precompute(waveform_16k, audiogram_db_hl, spl_db)
                hidden = self.frontend.forward_features(feats, level)
            elif features is not None:
                hidden = self.frontend.forward_features(features)
            elif self.frontend.wants_calibrated_input and getattr(self.frontend, "accepts_gain", False):
                hidden = self.frontend(waveform_16k, audiogram_db_hl, calibration_gain(waveform_16k, spl_db))
            else:
                if self.frontend.wants_calibrated_input:
                    waveform_16k = calibrate_to_spl(waveform_16k, spl_db)
                if getattr(self.frontend, "wants_audiogram", False):
                    hidden = self.frontend(waveform_16k, audiogram_db_hl)
                else:
                    hidden = self.frontend(waveform_16k)  # L x (B, T, D)
        stacked = torch.stack([norm(h) for norm, h in zip(self.layer_norms, hidden)])  # (L, B, T, D)
        weights = F.softmax(self.layer_weights, dim=0)  # (L,)
        return torch.einsum("l,lbtd->btd", weights, stacked)  # (B, T, D)

    def forward(self, waveform_16k: torch.Tensor, audiogram_db_hl: torch.Tensor, spl_db: torch.Tensor,
                n_samples: torch.Tensor | None = None, *, features: torch.Tensor | None = None,
                input_spl_db: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict HAAQI.

        Args:
            waveform_16k: float tensor (B, n_samples), 16 kHz, full scale 1.0, zero-padded.
            audiogram_db_hl: float tensor (B, 8), dB HL at :data:`AUDIOGRAM_FREQUENCIES_HZ`.
            spl_db: float tensor (B,), RMS level of the judged signal in dB SPL.
            n_samples: optional int tensor (B,), unpadded lengths; padded frames are
                ignored by the BLSTM, the attention and the clip mean.

            features: optional (B, T_f, F), the output of :meth:`precompute` for these clips; then
                ``waveform_16k`` is not used (it may be None) and ``n_samples`` must be None.
            input_spl_db: optional (B,), the clean music's presentation level in dB SPL (NaN: unknown), for
                networks with ``input_level``; others ignore it.

        Returns:
            clip_score: (B,) in (0, 1); frame_scores: (B, T) in (0, 1) (padded frames are 0).
        """
        if features is None:
            self._check(waveform_16k, audiogram_db_hl, spl_db)
        x = self.adapter(self.encode(waveform_16k, spl_db, audiogram_db_hl, features,
                                     input_spl_db))  # (B, T, adapter_dim)
        n_frames = x.shape[1]
        cond = [audiogram_db_hl.to(x.dtype) / AUDIOGRAM_SCALE_DB]  # (B, 8)
        if self.use_spl:
            cond.append(((spl_db.to(x.dtype) - SPL_CENTER_DB) / SPL_SCALE_DB).unsqueeze(1))  # (B, 1)
        cond = torch.cat(cond, dim=1).unsqueeze(1).expand(-1, n_frames, -1)  # (B, T, n_cond)
        x = torch.cat([x, cond], dim=2)  # (B, T, adapter_dim + n_cond)

        mask = None if n_samples is None else self.frame_mask(n_samples, n_frames).to(x.device)  # (B, T)
        if mask is not None and bool(mask.all()):
            mask = None
        if self.blstm is None:
            x = F.gelu(self.pointwise(x))  # (B, T, 2 * lstm_hidden), per frame
        elif mask is None:
            x, _ = self.blstm(x)  # (B, T, 2 * lstm_hidden)
        else:
            lengths = mask.sum(dim=1).clamp(min=1).cpu()
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            x, _ = pad_packed_sequence(self.blstm(packed)[0], batch_first=True, total_length=n_frames)
        x = self.dropout(F.relu(self.project(x)))  # (B, T, attention_dim)
        x, _ = self.attention(x, x, x, key_padding_mask=None if mask is None else ~mask, need_weights=False)
        frames = torch.sigmoid(self.frame_score(x)).squeeze(2)  # (B, T, 1) -> (B, T)
        if mask is None:
            return self.map_scores(frames.mean(dim=1), frames)
        frames = frames * mask
        clip, frames = self.map_scores(frames.sum(dim=1) / mask.sum(dim=1).clamp(min=1), frames)
        return clip, frames * mask

    def map_scores(self, clip: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clip and frame scores through the :class:`ScoreMap`, if the network has one."""
        if self.score_map is None:
            return clip, frames
        return self.score_map(clip), self.score_map(frames)


def haaqinet_loss(clip_pred: torch.Tensor, frame_pred: torch.Tensor, target: torch.Tensor,
                  frame_mask: torch.Tensor | None = None, high_weight: float = 0.0) -> torch.Tensor:
    """Clip MSE plus frame MSE against the clip label (the paper's loss).

    ``high_weight`` > 0 weights each item by ``1 + high_weight * target ** 4`` (mean weight
    normalised to 1 per batch), so the dense labels near 1 (clean aided music) count more.

    Args:
        clip_pred: (B,) predicted clip scores.
        frame_pred: (B, T) predicted frame scores.
        target: (B,) HAAQI labels in [0, 1].
        frame_mask: optional bool (B, T), True for valid frames.

    Returns:
        scalar tensor.
    """
    w = torch.ones_like(target)
    if high_weight:
        w = 1.0 + high_weight * target.square().square()
        w = w / w.mean()
    clip_loss = (w * (clip_pred - target).square()).mean()
    frame_err = (frame_pred - target.unsqueeze(1)).square() * w.unsqueeze(1)  # (B, T)
    if frame_mask is None:
        return clip_loss + frame_err.mean()
    frame_mask = frame_mask.to(frame_err.dtype)
    return clip_loss + (frame_err * frame_mask).sum() / frame_mask.sum().clamp(min=1)


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
