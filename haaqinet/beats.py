"""BEATs audio encoder (Chen et al., 2022), written for haaqi-bench.

An independent implementation that reads the official checkpoint format: a
``torch.load`` dict ``{"cfg": {...BEATsConfig fields...}, "model": state_dict}``
whose parameter names match the official ones, so a real checkpoint (e.g.
``BEATs_iter3_plus_AS2M.pt``) loads with ``strict=True``.

The maths, per clip of 16 kHz audio ``(B, n_samples)``:

1. ``fbank = kaldi_fbank(waveform * 2**15)``, 128 mel bins, then
   ``(fbank - 15.41663) / (2 * 6.55582)``: ``(B, n_frames, 128)``.
2. Non-overlapping 16 x 16 patches (Conv2d without bias), flattened time-major:
   ``(B, n_frames // 16 * 8, embed_dim)``, i.e. 8 frequency patches per 160 ms.
3. LayerNorm(embed_dim), Linear(embed_dim -> encoder_embed_dim).
4. Convolutional positional embedding (grouped Conv1d with weight
   normalisation over the kernel axis, trimmed to "same" length, GELU) added to
   the tokens, then LayerNorm (post-LN models).
5. ``encoder_layers`` transformer layers. Post-LN with deep-norm:
   ``x = LN(alpha * x + Attn(x)); x = LN(alpha * x + FFN(x))`` with
   ``alpha = (2 * encoder_layers) ** 0.25``. Attention logits get a bucketed
   relative-position bias (computed by the first layer, shared by all) scaled
   per query and head by a learned gate (``gru_rel_pos``).

:class:`BEATsFrontend` returns the output of every layer. Layer drop and
layer-wise gradient decay (fine-tuning tricks) are not implemented, nor are
padding masks: pad with zeros and mask downstream.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import BenchError
from haaqinet.fbank import kaldi_fbank, n_fbank_frames
from haaqinet.frontends import Frontend

logger = logging.getLogger(__name__)

#: BEATs' fbank normalisation (AudioSet statistics).
FBANK_MEAN = 15.41663
FBANK_STD = 6.55582


@dataclass
class BEATsConfig:
    """The fields of the official ``BEATsConfig``; defaults are those of the iter3 models."""

    input_patch_size: int = 16
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_wise_gradient_decay_ratio: float = 1.0
    layer_norm_first: bool = False
    deep_norm: bool = True
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    dropout_input: float = 0.0
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = True
    num_buckets: int = 320
    max_distance: int = 800
    gru_rel_pos: bool = True
    finetuned_model: bool = False
    predictor_dropout: float = 0.1
    predictor_class: int = 527

    @classmethod
    def from_dict(cls, cfg: dict) -> BEATsConfig:
        """Build from a checkpoint's ``cfg``; unknown keys are logged and ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - names)
        if unknown:
            logger.warning("ignoring unknown BEATs config fields: %s", ", ".join(unknown))
        return cls(**{k: v for k, v in cfg.items() if k in names})


_ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_accurate": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "tanh": torch.tanh,
    "linear": lambda x: x,
}


class _WeightNormConv1d(nn.Module):
    """Conv1d whose weight is ``weight_v * weight_g / ||weight_v||``, norm over all but the kernel axis."""

    def __init__(self, channels: int, kernel_size: int, groups: int):
        super().__init__()
        self.padding = kernel_size // 2
        self.groups = groups
        std = math.sqrt(4.0 / (kernel_size * channels))
        self.weight_v = nn.Parameter(torch.randn(channels, channels // groups, kernel_size) * std)
        self.weight_g = nn.Parameter(self.weight_v.detach().norm(dim=(0, 1), keepdim=True))  # (1, 1, kernel)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.weight_v.norm(dim=(0, 1), keepdim=True)  # (1, 1, kernel)
        weight = self.weight_v * (self.weight_g / norm)
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)


class _TrimLast(nn.Module):
    """Drop the extra output step an even kernel with ``padding = k // 2`` produces."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.n = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : x.shape[-1] - self.n] if self.n else x


def relative_position_buckets(n_query: int, n_key: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Bucket index of each (query, key) offset, long tensor of shape (n_query, n_key).

    Half the buckets are for keys after the query. Within a half, offsets below a
    quarter of ``num_buckets`` get their own bucket; larger ones share buckets
    spaced logarithmically up to ``max_distance``.
    """
    offset = torch.arange(n_key)[None, :] - torch.arange(n_query)[:, None]  # key - query
    half = num_buckets // 2
    bucket = (offset > 0).long() * half
    distance = offset.abs()
    exact = half // 2
    far = exact + (
        torch.log(distance.clamp(min=1).float() / exact) / math.log(max_distance / exact) * (half - exact)
    ).long()
    far = far.clamp(max=half - 1)
    return bucket + torch.where(distance < exact, distance, far)


class _Attention(nn.Module):
    """Self-attention with an optional gated, bucketed relative-position bias."""

    def __init__(self, cfg: BEATsConfig):
        super().__init__()
        dim, heads = cfg.encoder_embed_dim, cfg.encoder_attention_heads
        if dim % heads:
            raise BenchError(f"BEATs: encoder_embed_dim {dim} is not divisible by {heads} heads")
        self.heads, self.head_dim = heads, dim // heads
        self.num_buckets, self.max_distance = cfg.num_buckets, cfg.max_distance
        self.dropout = cfg.attention_dropout
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.relative_attention_bias = (
            nn.Embedding(cfg.num_buckets, heads) if cfg.relative_position_embedding else None
        )
        self.gru_rel_pos = cfg.gru_rel_pos
        if self.gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))

    def position_bias(self, n_tokens: int) -> torch.Tensor:
        """Ungated bias, shape (heads, n_tokens, n_tokens)."""
        buckets = relative_position_buckets(n_tokens, n_tokens, self.num_buckets, self.max_distance)
        buckets = buckets.to(self.relative_attention_bias.weight.device)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)  # (T, T, H) -> (H, T, T)

    def forward(self, x: torch.Tensor, pos_bias: torch.Tensor | None):
        batch, n_tokens, dim = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, n_tokens, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, dh)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        if pos_bias is None and self.relative_attention_bias is not None:
            pos_bias = self.position_bias(n_tokens)  # (H, T, T)
        bias = None
        if pos_bias is not None:
            bias = pos_bias.unsqueeze(0)  # (1, H, T, T)
            if self.gru_rel_pos:
                gates = self.grep_linear(q).view(batch, self.heads, n_tokens, 2, 4).sum(-1)  # (B, H, T, 2)
                gate_a, gate_b = torch.sigmoid(gates).chunk(2, dim=-1)  # (B, H, T, 1) each
                bias = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * bias  # (B, H, T, T)
            bias = bias.to(q.dtype)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, T, dh); softmax(q k^T / sqrt(dh) + bias) v
        out = out.transpose(1, 2).reshape(batch, n_tokens, dim)  # (B, T, H * dh)
        return self.out_proj(out), pos_bias


class _Layer(nn.Module):
    def __init__(self, cfg: BEATsConfig):
        super().__init__()
        if cfg.activation_fn not in _ACTIVATIONS:
            raise BenchError(
                f"BEATs: activation {cfg.activation_fn!r} is not supported; use one of {', '.join(_ACTIVATIONS)}"
            )
        dim = cfg.encoder_embed_dim
        self.activation = _ACTIVATIONS[cfg.activation_fn]
        self.self_attn = _Attention(cfg)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.pre_norm = cfg.layer_norm_first
        self.alpha = (2.0 * cfg.encoder_layers) ** 0.25 if cfg.deep_norm else 1.0
        self.p_drop, self.p_act_drop = cfg.dropout, cfg.activation_dropout

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        x = F.dropout(self.activation(self.fc1(x)), self.p_act_drop, self.training)
        return F.dropout(self.fc2(x), self.p_drop, self.training)

    def forward(self, x: torch.Tensor, pos_bias: torch.Tensor | None):
        if self.pre_norm:
            attn, pos_bias = self.self_attn(self.self_attn_layer_norm(x), pos_bias)
            x = x + F.dropout(attn, self.p_drop, self.training)
            x = x + self._ffn(self.final_layer_norm(x))
        else:
            attn, pos_bias = self.self_attn(x, pos_bias)
            x = self.self_attn_layer_norm(self.alpha * x + F.dropout(attn, self.p_drop, self.training))
            x = self.final_layer_norm(self.alpha * x + self._ffn(x))
        return x, pos_bias


class _Encoder(nn.Module):
    def __init__(self, cfg: BEATsConfig):
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.pos_conv = nn.Sequential(
            _WeightNormConv1d(dim, cfg.conv_pos, cfg.conv_pos_groups), _TrimLast(cfg.conv_pos), nn.GELU()
        )
        self.layers = nn.ModuleList(_Layer(cfg) for _ in range(cfg.encoder_layers))
        if cfg.relative_position_embedding:
            # One bias table for all layers, registered under every layer's name as the
            # official code does, so checkpoints list it once per layer.
            shared = self.layers[0].self_attn.relative_attention_bias
            for layer in self.layers[1:]:
                layer.self_attn.relative_attention_bias = shared
        self.layer_norm = nn.LayerNorm(dim)
        self.pre_norm = cfg.layer_norm_first
        self.p_drop = cfg.dropout

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Tokens (B, T, D) -> the output of every layer, each (B, T, D)."""
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)  # conv over time: (B, D, T)
        if not self.pre_norm:
            x = self.layer_norm(x)
        x = F.dropout(x, self.p_drop, self.training)
        outputs, pos_bias = [], None
        for layer in self.layers:
            x, pos_bias = layer(x, pos_bias)
            outputs.append(x)
        return outputs


class BEATs(nn.Module):
    """The BEATs encoder; parameter names follow the official checkpoints."""

    def __init__(self, cfg: BEATsConfig):
        super().__init__()
        if cfg.deep_norm and cfg.layer_norm_first:
            raise BenchError("BEATs: deep_norm and layer_norm_first cannot both be set")
        self.cfg = cfg
        self.patch_embedding = nn.Conv2d(
            1, cfg.embed_dim, kernel_size=cfg.input_patch_size, stride=cfg.input_patch_size, bias=cfg.conv_bias
        )
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.post_extract_proj = (
            nn.Linear(cfg.embed_dim, cfg.encoder_embed_dim) if cfg.embed_dim != cfg.encoder_embed_dim else None
        )
        self.encoder = _Encoder(cfg)
        # Only so that fine-tuned (AudioSet) checkpoints load strictly; never used here.
        self.predictor = nn.Linear(cfg.encoder_embed_dim, cfg.predictor_class) if cfg.finetuned_model else None

    @staticmethod
    def preprocess(waveform_16k: torch.Tensor) -> torch.Tensor:
        """(B, n_samples), full scale 1.0 -> normalised fbank (B, n_frames, 128)."""
        fbank = kaldi_fbank(waveform_16k * 2**15, sample_rate_hz=16000, n_mels=128)
        return (fbank - FBANK_MEAN) / (2 * FBANK_STD)

    def forward(self, waveform_16k: torch.Tensor) -> list[torch.Tensor]:
        """(B, n_samples) at 16 kHz -> every layer's output, each (B, n_tokens, encoder_embed_dim)."""
        fbank = self.preprocess(waveform_16k).unsqueeze(1)  # (B, 1, n_frames, 128)
        x = self.patch_embedding(fbank)  # (B, E, n_frames // p, 128 // p)
        x = x.flatten(2).transpose(1, 2)  # (B, n_tokens, E), time-major: 8 freq patches per step
        x = self.layer_norm(x)
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)  # (B, n_tokens, D)
        x = F.dropout(x, self.cfg.dropout_input, self.training)
        return self.encoder(x)

    def n_tokens(self, n_samples: int) -> int:
        """Tokens produced for a clip of ``n_samples`` samples."""
        p = self.cfg.input_patch_size
        return (n_fbank_frames(n_samples) // p) * (128 // p)


def save_beats_checkpoint(path: str | Path, model: BEATs) -> None:
    """Write ``model`` in the official format ``{"cfg": dict, "model": state_dict}``."""
    torch.save({"cfg": dataclasses.asdict(model.cfg), "model": model.state_dict()}, str(path))


def load_beats_checkpoint(path: str | Path, map_location: str = "cpu") -> BEATs:
    """Load an official-format BEATs checkpoint with a strict state-dict match.

    Raises:
        BenchError: the file is missing, is not a BEATs checkpoint, or its weights
            do not fit its configuration.
    """
    path = Path(path)
    if not path.is_file():
        raise BenchError(
            f"BEATs checkpoint not found: {path}. Download BEATs_iter3_plus_AS2M.pt from the "
            f"microsoft/unilm BEATs page yourself and pass its path (nothing is downloaded here)"
        )
    try:
        ckpt = torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle, zip or format errors all mean "not a checkpoint"
        raise BenchError(f"{path} is not a readable torch checkpoint: {type(exc).__name__}: {exc}") from None
    if not (isinstance(ckpt, dict) and isinstance(ckpt.get("cfg"), dict) and isinstance(ckpt.get("model"), dict)):
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise BenchError(f"{path} is not a BEATs checkpoint (expected a dict with 'cfg' and 'model'; got {keys})")
    try:
        model = BEATs(BEATsConfig.from_dict(ckpt["cfg"]))
    except TypeError as exc:
        raise BenchError(f"{path}: bad BEATs config: {exc}") from None
    state = dict(ckpt["model"])
    # Accept files that list the shared relative-position table only under layer 0.
    first = "encoder.layers.0.self_attn.relative_attention_bias.weight"
    if first in state:
        for i in range(1, model.cfg.encoder_layers):
            state.setdefault(f"encoder.layers.{i}.self_attn.relative_attention_bias.weight", state[first])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BenchError(f"{path}: weights do not match its BEATs config: {_first_lines(str(exc))}") from None
    return model.eval()


def _first_lines(text: str, n: int = 4) -> str:
    lines = text.strip().splitlines()
    return " ".join(lines[:n]) + (" ..." if len(lines) > n else "")


class BEATsFrontend(Frontend):
    """Front end ``beats``: a BEATs checkpoint giving all layer outputs.

    Args:
        checkpoint_path: path of an official-format BEATs ``.pt`` file.

    Attributes:
        n_layers, dim: number and width of the hidden states.
        frames_per_second: tokens per second (50 for 16 x 16 patches).
    """

    sample_rate_hz = 16000
    external_weights = True
    weights_arg = "checkpoint_path"
    wants_calibrated_input = False

    def __init__(self, checkpoint_path: str):
        super().__init__()
        self.checkpoint_path = str(checkpoint_path)
        self.encoder = load_beats_checkpoint(checkpoint_path)
        cfg = self.encoder.cfg
        self.n_layers = cfg.encoder_layers
        self.dim = cfg.encoder_embed_dim
        self.frames_per_second = 100.0 / cfg.input_patch_size * (128 // cfg.input_patch_size)

    def forward(self, waveform_16k: torch.Tensor) -> list[torch.Tensor]:
        """(B, n_samples) -> list of n_layers tensors, each (B, n_tokens, dim)."""
        return self.encoder(waveform_16k)

    def n_frames(self, n_samples: int) -> int:
        return self.encoder.n_tokens(n_samples)
