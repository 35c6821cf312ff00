"""A fast CPU inference path for HAAQI-Nets with the ``auditory`` front end (the teacher and the student).

:class:`FastHAAQINet` wraps a trained :class:`~haaqinet.model.HAAQINet` and gives its scores (the same up
to float32 rounding: ``tests/haaqinet/test_fast.py``) with far fewer operations, which is what a small
model at batch 1 pays for. Nothing about the network changes; the same arithmetic is regrouped:

* the fixed stage (calibration gain, framing, band powers, the four maps) and the clip statistics run in
  two numba passes around torch's FFT (:mod:`haaqinet.fast_kernels`);
* each stem convolution is one matrix product of its three taps, whose shifted rows are then added; the
  positional convolution's residual is folded into its centre tap;
* the layer norms' affine maps, the softmax layer weights, the adapter and (``rnn="none"``) the per-frame
  layer with its conditioning inputs fold into one matrix and a per-clip bias;
* the attention's value and output projections and the frame-score layer fold into one value per head and
  frame, so the attention computes queries, keys and that value only.

A network without transformer layers and with the per-frame head (the distilled student) then runs from
the maps to the scores in one numba kernel (:mod:`haaqinet.fast_fused`). Others (the teacher) run torch's
matrix products, activations, softmax, BLSTM and transformer layers (faster at their sizes) between the
numba kernels. Weights are copied at construction: build it again after changing the model. Masked
batches (``n_samples``) and malformed inputs go to the wrapped model.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from haaqinet import fast_fused, fast_kernels
from haaqinet.frontends import AuditoryFrontend
from haaqinet.model import (AUDIOGRAM_FREQUENCIES_HZ, AUDIOGRAM_SCALE_DB, SPL_CENTER_DB, SPL_SCALE_DB, HAAQINet,
                            input_level_values)


def _np(t: torch.Tensor) -> np.ndarray:
    """A float32, C-ordered numpy copy."""
    return np.ascontiguousarray(t.detach().to(torch.float32).numpy())


class FastHAAQINet(nn.Module):
    """Inference-only form of an ``auditory`` HAAQI-Net on the CPU, called like the model itself."""

    def __init__(self, model: HAAQINet):
        super().__init__()
        if not supports(model):
            raise TypeError("FastHAAQINet needs a float32 HAAQINet with the auditory front end, on the CPU")
        self.model = model.eval()
        with torch.no_grad():
            self._fixed_stage(model.frontend)
            self._encoder(model.frontend)
            self._head(model)
        self.fused = not self.layers and self.blstm is None
        more = self.taps[1:]
        self.more_taps = np.stack(more) if more else np.zeros((0, self.dim, 3 * self.dim), np.float32)
        self.tensors = {k: torch.from_numpy(getattr(self, k))  # views of the same weights, for torch's products
                        for k in ("enc_w", "enc_b", "project_w", "project_b", "qkz_w", "qkz_b")}

    def _fixed_stage(self, fe: AuditoryFrontend) -> None:
        self.n_fft, self.hop = fe.N_FFT, fe.HOP
        bands = fe.bands.double()
        nonzero = (bands > 0).double()
        self.start = nonzero.argmax(dim=1).numpy()  # each band's first and last + 1 bin
        self.stop = (bands.shape[1] - nonzero.flip(1).argmax(dim=1)).numpy()
        norm = bands.sum(dim=1)
        scale = torch.full((bands.shape[1],), 2.0, dtype=torch.float64)
        scale[0] = scale[-1] = 1.0
        self.window, self.bands, self.norm = _np(fe.window), _np(fe.bands), _np(norm)
        self.scale = _np(scale / (self.n_fft * fe.window.double().square().sum()))  # bin powers are mean squares
        self.geo = _np(bands / norm[:, None])
        self.retspl, self.interp_t = _np(fe.retspl), _np(fe.interp.T)

    def _encoder(self, fe: AuditoryFrontend) -> None:
        self.stats_w, self.stats_b = _np(fe.stats.weight.T), _np(fe.stats.bias)
        convs = [m for m in fe.stem if isinstance(m, nn.Conv1d)]
        self.taps = [_np(c.weight.permute(1, 2, 0).reshape(c.in_channels, -1)) for c in convs]  # (in, 3 out)
        self.biases = _np(torch.stack([c.bias for c in convs]))
        self.strides = np.array([c.stride[0] for c in convs])
        pos = fe.pos_conv.weight[:, 0, :].double().clone()  # (dim, kernel)
        pos[:, fe.pos_conv.padding[0]] += 1.0  # x + pos_conv(x)
        self.pos_w, self.pos_b = _np(pos.T), _np(fe.pos_conv.bias)
        self.stem_norm = (_np(fe.stem_norm.weight), _np(fe.stem_norm.bias), fe.stem_norm.eps)
        self.layers = fe.layers

    def _head(self, model: HAAQINet) -> None:
        weights = F.softmax(model.layer_weights.double(), dim=0)
        adapter = model.adapter.weight.double()
        norms = model.layer_norms
        enc_w = torch.cat([adapter * (w * n.weight.double()) for w, n in zip(weights, norms)], dim=1)
        enc_b = model.adapter.bias.double() + sum(adapter @ (w * n.bias.double()) for w, n in zip(weights, norms))
        self.norm_eps = [n.eps for n in norms]
        self.dim, self.blstm = model.frontend.dim, model.blstm
        n_cond = len(AUDIOGRAM_FREQUENCIES_HZ) + int(model.use_spl)
        self.cond_scale = _np(torch.tensor([1 / AUDIOGRAM_SCALE_DB] * 8 + [1 / SPL_SCALE_DB])[:n_cond])
        self.cond_shift = _np(torch.tensor([0.0] * 8 + [-SPL_CENTER_DB / SPL_SCALE_DB])[:n_cond])
        if self.blstm is None:  # adapter, conditioning inputs and the per-frame layer in one
            point = model.pointwise.weight.double()
            self.enc_w, self.cond_w = _np((point[:, :-n_cond] @ enc_w).T), _np(point[:, -n_cond:].T)
            self.enc_b = _np(point[:, :-n_cond] @ enc_b + model.pointwise.bias.double())
        else:
            self.enc_w, self.enc_b = _np(enc_w.T), _np(enc_b)
        self.project_w, self.project_b = _np(model.project.weight.T), _np(model.project.bias)
        att = model.attention
        e, heads = att.embed_dim, att.num_heads
        w_in, b_in = att.in_proj_weight.double(), att.in_proj_bias.double()
        score = model.frame_score.weight.double()[0]
        u = (score @ att.out_proj.weight.double()).view(heads, -1)  # what each head's output adds to the score
        w_value = torch.einsum("hd,hdi->hi", u, w_in[2 * e:].view(heads, -1, e))  # (heads, e)
        b_value = (u * b_in[2 * e:].view(heads, -1)).sum(1)  # softmax rows sum to 1: the score's bias goes here
        b_value = b_value + (score @ att.out_proj.bias.double() + model.frame_score.bias.double()[0]) / heads
        q_scale = torch.ones(2 * e + heads, dtype=torch.float64)
        q_scale[:e] = 1 / math.sqrt(e // heads)
        self.qkz_w = _np((torch.cat([w_in[:2 * e], w_value]) * q_scale[:, None]).T)  # (e, 2 e + heads)
        self.qkz_b = _np(torch.cat([b_in[:2 * e], b_value]) * q_scale)
        self.heads = heads

    def features(self, waveform: np.ndarray, audiogram_db_hl: np.ndarray, spl_db: np.ndarray):
        """The fixed maps (B, T, 4 K) and clip statistics (B, 9 K) of uncalibrated (B, n) audio."""
        frames, mean_square = fast_kernels.frames(waveform, self.window, self.hop, waveform.shape[1] // self.hop + 1)
        spec = torch.view_as_real(torch.fft.rfft(torch.from_numpy(frames))).numpy()
        return fast_kernels.fixed_maps(spec, mean_square, spl_db, self.scale, self.bands, self.geo, self.start,
                                       self.stop, self.norm, audiogram_db_hl, self.retspl, self.interp_t)

    def forward(self, waveform_16k: torch.Tensor, audiogram_db_hl: torch.Tensor, spl_db: torch.Tensor,
                n_samples: torch.Tensor | None = None, *,
                input_spl_db: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`HAAQINet.forward`: clip scores (B,) and frame scores (B, T)."""
        shape = tuple(waveform_16k.shape)
        if (n_samples is not None or len(shape) != 2 or shape[1] <= self.n_fft // 2
                or tuple(audiogram_db_hl.shape) != (shape[0], 8) or tuple(spl_db.shape) != (shape[0],)
                or (input_spl_db is not None and tuple(input_spl_db.shape) != (shape[0],))):
            return self.model(waveform_16k, audiogram_db_hl, spl_db, n_samples,  # masks, errors, tiny clips
                              input_spl_db=input_spl_db)
        x = np.ascontiguousarray(waveform_16k.detach().numpy(), dtype=np.float32)
        a = np.ascontiguousarray(audiogram_db_hl.detach().numpy(), dtype=np.float32)
        s = spl_db.detach().numpy().astype(np.float64)
        feats, stats = self.features(x, a, s)
        if self.model.input_level:  # the clip inputs join the clip statistics, as in the front end
            level = _np(input_level_values(input_spl_db, shape[0]))
            stats = np.ascontiguousarray(np.concatenate([stats, level], 1))
            if self.model.frontend.level_channels:   # and the stem's input, as constant channels
                feats = np.ascontiguousarray(np.concatenate(
                    [feats, np.broadcast_to(level[:, None, :], (*feats.shape[:2], level.shape[1]))], 2))
        if self.fused:
            clip, frames = fast_fused.pointwise_net(
                feats, stats, a, s, self.taps[0], self.more_taps, self.biases, self.strides, self.stats_w,
                self.stats_b, self.pos_w, self.pos_b, *self.stem_norm, self.norm_eps[0], self.enc_w, self.enc_b,
                self.cond_w, self.cond_scale, self.cond_shift, self.project_w, self.project_b, self.qkz_w, self.qkz_b,
                self.heads)
        else:
            with torch.no_grad() if torch.is_grad_enabled() else contextlib.nullcontext():
                clip, frames = self._hybrid(feats, stats, a, s)
        if self.model.score_map is None:
            return torch.from_numpy(clip), torch.from_numpy(frames)
        with torch.no_grad():
            return self.model.map_scores(torch.from_numpy(clip), torch.from_numpy(frames))

    def _hybrid(self, feats: np.ndarray, stats: np.ndarray, a: np.ndarray, s: np.ndarray):
        """The learned part with torch's matrix products, activations, softmax and layers between numba kernels."""
        x, w = torch.from_numpy(feats), self.tensors
        for taps, bias, stride in zip(self.taps, self.biases, self.strides):
            x = F.gelu(torch.from_numpy(fast_kernels.conv_taps((x @ torch.from_numpy(taps)).numpy(), bias, stride)))
        h, z = fast_kernels.position_and_norms(x.numpy(), stats, self.stats_w, self.stats_b, self.pos_w, self.pos_b,
                                               *self.stem_norm, self.norm_eps[0])
        hidden = [torch.from_numpy(h)]
        for layer in self.layers:
            hidden.append(layer(hidden[-1]))
        normed = [F.layer_norm(state, (self.dim,), eps=eps) for state, eps in zip(hidden[1:], self.norm_eps[1:])]
        z = torch.cat([torch.from_numpy(z)] + normed, dim=2)  # (B, T, n_layers * dim)
        n_clips, n_frames = z.shape[0], z.shape[1]
        cond = (np.concatenate([a, s[:, None]], axis=1)[:, :len(self.cond_scale)] * self.cond_scale
                + self.cond_shift).astype(np.float32)  # the model's normalised conditioning inputs
        x = torch.addmm(w["enc_b"], z.view(n_clips * n_frames, -1), w["enc_w"]).view(n_clips, n_frames, -1)
        if self.blstm is None:
            x = F.gelu(x.add_(torch.from_numpy(cond @ self.cond_w)[:, None]))
        else:
            x = self.blstm(torch.cat([x, torch.from_numpy(cond)[:, None].expand(-1, n_frames, -1)], dim=2))[0]
        x = torch.addmm(w["project_b"], x.reshape(n_clips * n_frames, -1), w["project_w"]).relu_()
        qkz = torch.addmm(w["qkz_b"], x, w["qkz_w"]).view(n_clips, n_frames, -1)
        e = (qkz.shape[2] - self.heads) // 2
        q = qkz[..., :e].view(n_clips, n_frames, self.heads, -1).transpose(1, 2)
        k = qkz[..., e:2 * e].view(n_clips, n_frames, self.heads, -1).permute(0, 2, 3, 1)
        weights = torch.softmax(q @ k, dim=-1)  # (B, heads, T, T)
        return fast_kernels.attention_scores(weights.numpy(), qkz.numpy()[..., 2 * e:])


def supports(model: nn.Module) -> bool:
    """Whether :class:`FastHAAQINet` can run ``model``: an ``auditory`` HAAQI-Net with the four standard maps
    (not ``haaqi_level``, whose fifth map the fast fixed stage does not compute) on the CPU, in float32."""
    return (isinstance(model, HAAQINet) and type(model.frontend) is AuditoryFrontend
            and not model.frontend.haaqi_level
            and all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters()))


def inference_model(model: nn.Module) -> nn.Module:
    """The fastest form of ``model`` for inference: a :class:`FastHAAQINet` where supported, else ``model``;
    for an ensemble, the mean of its members' fastest forms."""
    from haaqinet.ensemble import HAAQINetEnsemble, MeanOf

    if isinstance(model, HAAQINetEnsemble):
        return MeanOf([inference_model(m) for m in model.members]).eval()
    return FastHAAQINet(model) if supports(model) else model
