"""Feature front ends for HAAQI-Net: the contract, the registry and the ``mel`` front end.

Every front end is an ``nn.Module`` that maps 16 kHz audio to a list of hidden
states::

    forward(waveform_16k: (B, n_samples)) -> [ (B, T, dim) ] * n_layers

with the attributes ``n_layers``, ``dim``, ``frames_per_second`` (approximate),
``sample_rate_hz = 16000``, ``external_weights`` (its weights come from a file
the user brings, so HAAQI-Net checkpoints store a reference instead of them;
``weights_arg`` names the constructor argument holding that path) and
``wants_calibrated_input`` (see :func:`calibrate_to_spl`), and the method
``n_frames(n_samples) -> int``.

Front ends are found by name (``create_frontend("mel", dim=256)``). Built-ins
are lazy ``"module:Class"`` entries, so ``hf`` imports transformers only when
it is used; :func:`register_frontend` adds more.
"""

from __future__ import annotations

import importlib
import inspect
import math

import numpy as np
import torch
from torch import nn

from benchmark.errors import BenchError
from benchmark.registry_util import did_you_mean
from haaqinet.fbank import kaldi_fbank, n_fbank_frames

#: dB SPL of a calibrated waveform whose RMS is 1.0 (see :func:`calibrate_to_spl`).
CALIBRATED_DB_SPL_AT_RMS1 = 100.0

#: RMS (full scale 1.0) below which a clip counts as silent when calibrating.
_SILENT_RMS = 1e-5

BUILTIN: dict[str, str] = {
    "mel": "haaqinet.frontends:MelFrontend",
    "beats": "haaqinet.beats:BEATsFrontend",
    "hf": "haaqinet.hf:HFFrontend",
    "auditory": "haaqinet.frontends:AuditoryFrontend",
}


class Frontend(nn.Module):
    """Base class documenting the front-end contract (see the module docstring)."""

    sample_rate_hz = 16000
    external_weights = False
    weights_arg: str | None = None
    wants_calibrated_input = False
    wants_audiogram = False
    n_layers: int
    dim: int
    frames_per_second: float

    def n_frames(self, n_samples: int) -> int:  # pragma: no cover - overridden
        raise NotImplementedError


def register_frontend(name: str):
    """Class decorator adding a front end to the registry under ``name``."""

    def wrap(cls):
        BUILTIN[name] = cls
        return cls

    return wrap


def available_frontends() -> list[str]:
    """Names of the registered front ends."""
    return list(BUILTIN)


def get_frontend_class(name: str) -> type[nn.Module]:
    """The class registered as ``name``; a did-you-mean ``BenchError`` otherwise."""
    if name not in BUILTIN:
        raise BenchError(
            f"unknown front end {name!r}{did_you_mean(name, BUILTIN)}; "
            f"available: {', '.join(available_frontends())}"
        )
    entry = BUILTIN[name]
    if isinstance(entry, str):
        module_name, attr = entry.split(":")
        entry = getattr(importlib.import_module(module_name), attr)
    return entry


def create_frontend(name: str, **args) -> nn.Module:
    """A configured front end; an unknown option is a ``BenchError``."""
    cls = get_frontend_class(name)
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    signature = inspect.signature(cls.__init__).parameters
    params = {k: v for k, v in signature.items() if k != "self" and v.kind in named}
    for key in args:
        if key not in params:
            raise BenchError(
                f"front end {name!r} has no option {key!r}{did_you_mean(key, params)}; "
                f"options: {', '.join(params) or 'none'}"
            )
    missing = [k for k, v in params.items() if v.default is inspect.Parameter.empty and k not in args]
    if missing:
        raise BenchError(f"front end {name!r} needs {', '.join(missing)}")
    return cls(**args)


def calibrate_to_spl(waveform: torch.Tensor, spl_db: torch.Tensor) -> torch.Tensor:
    """Rescale each clip so that its digital level encodes its sound pressure level.

    After calibration a clip's RMS is ``10 ** ((spl_db - 100) / 20)``: RMS 1.0 is
    100 dB SPL (:data:`CALIBRATED_DB_SPL_AT_RMS1`), so a 65 dB SPL clip has RMS
    0.0178. Silent clips (RMS < 1e-5) are left at their (near-zero) level.

    Args:
        waveform: float tensor, shape (B, n_samples), any digital scale.
        spl_db: float tensor, shape (B,), RMS level of each clip in dB SPL.

    Returns:
        float tensor, shape (B, n_samples).
    """
    return waveform * calibration_gain(waveform, spl_db).unsqueeze(1)


def calibration_gain(waveform: torch.Tensor, spl_db: torch.Tensor) -> torch.Tensor:
    """The per-clip gain of :func:`calibrate_to_spl`, (B,) (1 for silent clips).

    Front ends with ``accepts_gain`` (``auditory``) take it instead of a rescaled waveform and apply it
    to their power spectrum, which saves a pass over every sample.
    """
    rms = torch.linalg.vector_norm(waveform, dim=1) / math.sqrt(max(waveform.shape[1], 1))  # (B,)
    target = torch.pow(10.0, (spl_db.to(waveform.dtype) - CALIBRATED_DB_SPL_AT_RMS1) / 20.0)  # (B,)
    return torch.where(rms >= _SILENT_RMS, target / rms.clamp(min=_SILENT_RMS), torch.ones_like(rms))


class MelFrontend(Frontend):
    """Front end ``mel``: a Kaldi log-mel filterbank and a small conv + transformer stack.

    It has no external weights and is trained with the head. It expects a
    calibrated waveform (:func:`calibrate_to_spl`; ``HAAQINet`` does this), and
    its only input normalisation is a fixed affine map of the log-mel power,
    ``(log_mel - LOG_OFFSET) / LOG_SCALE``, so absolute band levels in dB SPL
    reach the network. 0 is about the mean band of 65 dB SPL white noise and one
    unit is ``4 * 10 / ln(10) = 17.4`` dB; power is floored at 1e-10 (about
    0 dB SPL per band).

    Hidden states (``n_layers`` of them, each ``(B, T, dim)``, ``T`` at
    ``100 / stride`` frames per second): the conv stem's output, then the output
    of each of ``n_layers - 1`` pre-norm transformer layers.

    Args:
        n_mels: mel bands of the filterbank.
        dim: width of every hidden state.
        n_layers: number of hidden states (1 conv stem + n_layers - 1 transformer layers).
        n_heads: attention heads in the transformer layers.
        ffn_dim: width of the transformer feed-forward layers.
        stride: time subsampling of the stem, 1, 2 or 4 (fbank frames are 10 ms apart;
            the default 4 gives 25 frames per second).
        dropout: dropout in the transformer layers.
    """

    external_weights = False
    wants_calibrated_input = True
    LOG_OFFSET = -4.0
    LOG_SCALE = 4.0
    LOG_FLOOR = 1e-10

    def __init__(self, n_mels: int = 128, dim: int = 256, n_layers: int = 4, n_heads: int = 4,
                 ffn_dim: int = 512, stride: int = 4, dropout: float = 0.1):
        super().__init__()
        if n_layers < 1 or dim % n_heads:
            raise BenchError(
                f"mel front end: need n_layers >= 1 and dim divisible by n_heads (got {n_layers}, {dim}/{n_heads})"
            )
        self.n_mels, self.stride = n_mels, stride
        self.n_layers, self.dim = n_layers, dim
        self.frames_per_second = 100.0 / stride
        if stride not in (1, 2, 4):
            raise BenchError(f"mel front end: stride must be 1, 2 or 4 (got {stride})")
        self._strides = (min(stride, 2), stride // min(stride, 2))
        self.stem = nn.Sequential(
            nn.Conv1d(n_mels, dim, kernel_size=3, stride=self._strides[0], padding=1), nn.GELU(),
            nn.Conv1d(dim, dim, kernel_size=3, stride=self._strides[1], padding=1), nn.GELU(),
        )
        self.pos_conv = nn.Conv1d(dim, dim, kernel_size=15, padding=7, groups=dim)  # relative position, depthwise
        self.stem_norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, n_heads, ffn_dim, dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(n_layers - 1)
        )

    def features(self, waveform_16k: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel, (B, n_samples) -> (B, n_fbank_frames, n_mels)."""
        log_mel = kaldi_fbank(waveform_16k, n_mels=self.n_mels, log_floor=self.LOG_FLOOR)
        return (log_mel - self.LOG_OFFSET) / self.LOG_SCALE

    def forward(self, waveform_16k: torch.Tensor) -> list[torch.Tensor]:
        """(B, n_samples), calibrated -> n_layers hidden states, each (B, T, dim)."""
        x = self.features(waveform_16k).transpose(1, 2)  # (B, n_mels, n_fbank_frames)
        x = self.stem(x)  # (B, dim, T)
        x = self.stem_norm((x + self.pos_conv(x)).transpose(1, 2))  # (B, T, dim)
        hidden = [x]
        for layer in self.layers:
            x = layer(x)  # (B, T, dim)
            hidden.append(x)
        return hidden

    def n_frames(self, n_samples: int) -> int:
        frames = n_fbank_frames(n_samples)
        for s in self._strides:  # kernel 3, padding 1
            frames = 0 if frames == 0 else (frames - 1) // s + 1
        return frames



#: Reference equivalent threshold sound pressure levels (dB SPL at 0 dB HL; ISO 389-7 free field,
#: rounded) at the audiogram frequencies 250..8000 Hz, used to turn dB HL into dB SPL thresholds.
RETSPL_DB = (11.4, 4.4, 2.4, -1.3, -5.8, -5.4, 4.3, 12.6)
_AUDIOGRAM_HZ = (250, 500, 1000, 2000, 3000, 4000, 6000, 8000)


def _erb_rate(f_hz):
    return 21.4 * math.log10(1.0 + 0.00437 * f_hz)


# HAAQI's audiogram frequencies (250, 500, 1k, 2k, 4k, 6k Hz) within the model's eight
_HAAQI_AUDIOGRAM_INDEX = (0, 1, 2, 3, 5, 6)


def haaqi_sensation_db(level_db_spl: torch.Tensor, audiogram_db_hl: torch.Tensor, centre_hz) -> torch.Tensor:
    """Band levels as HAAQI's ear model hears them, in dB above its 0-dB floor.

    HAAQI splits each band's loss into an outer-hair-cell part (less gain and
    compression) and an inner-hair-cell part (an attenuation), as
    :func:`benchmark.haaqi.fast.ear_model.cochlea` does for its 32 bands; here the
    same split is made at ``centre_hz``. A band level L (dB SPL) is then compressed
    as HAAQI compresses its envelopes, gain = -attn_ohc - (clip(L, knee, 100) - knee)
    (1 - 1/ratio), attenuated by attn_ihc and floored at 0 dB, as HAAQI's conversion
    to dB SL does. Args: level (B, T, n_bands) dB SPL; audiogram (B, 8) dB HL at
    250 Hz-8 kHz. Returns (B, T, n_bands).
    """
    from benchmark.haaqi.fast.ear_model import cochlea

    hl = audiogram_db_hl.detach().double().cpu().numpy()[:, list(_HAAQI_AUDIOGRAM_INDEX)]
    ears = [cochlea(row, centre_hz=centre_hz) for row in hl]
    params = np.array([[e.attn_ohc_db, e.low_knee_db, 1.0 - 1.0 / e.ratio, e.attn_ihc_db] for e in ears])
    params = torch.as_tensor(params, dtype=level_db_spl.dtype, device=level_db_spl.device)   # (B, 4, n_bands)
    ohc, knee, slope, ihc = (params[:, i, None, :] for i in range(4))               # (B, 1, n_bands) each
    compressed = torch.minimum(torch.maximum(level_db_spl, knee), torch.full_like(knee, 100.0))
    return (level_db_spl - ohc - (compressed - knee) * slope - ihc).clamp(min=0.0)


class AuditoryFrontend(Frontend):
    """Front end ``auditory``: a calibrated ERB-spaced filterbank read against the listener's thresholds.

    A fixed (parameter-free) part computes, every 20 ms (STFT: 32-ms Hann window,
    20-ms hop, centred; ``n_fft`` and ``hop`` in samples at 16 kHz change them, e.g. the
    distilled student's 40-ms hop), four maps of ``n_bands`` ERB-spaced triangular bands from
    ``f_min_hz`` to ``f_max_hz``:

    * ``level``: band level in dB SPL of the calibrated waveform (RMS 1.0 = 100 dB SPL,
      :func:`calibrate_to_spl`), floored at -10 dB SPL, as ``(L - 50) / 20``;
    * ``sensation``: the level above the listener's threshold in that band,
      ``L - (HL(f) + RETSPL(f))`` with the audiogram interpolated in log frequency,
      floored at -30 dB, divided by 20 (audibility: the part of the music the impaired
      ear can hear);
    * ``threshold``: the band's threshold in dB SPL, ``(T - 40) / 30``;
    * ``flatness``: the band's spectral flatness in dB (geometric / arithmetic mean
      of the bin powers), divided by 10 (noise and distortion fill in the harmonic
      fine structure, raising it);
    * with ``haaqi_level=True``, a fifth map, ``haaqi``: the band level as HAAQI's own ear
      model hears it (:func:`haaqi_sensation_db`): after the outer-hair-cell compression
      and the inner-hair-cell attenuation that HAAQI derives from the audiogram, in dB
      above HAAQI's 0-dB floor, divided by 20.

    ``clip_inputs`` (set by :class:`~haaqinet.model.HAAQINet`'s ``input_level``) are values per clip that join
    the clip statistics; with ``level_channels=True`` they also enter the conv stem as channels constant over
    the frames, so the first convolution and its nonlinearity see each frame's maps beside them.

    No per-utterance or per-frame normalisation touches them, so absolute level
    reaches the network. The learned part adds clip statistics (mean and standard
    deviation over time of every map, and of the frame-to-frame change of the
    level: the envelope modulation that noise and compression flatten), projected
    and added to every frame, then a conv stem (kernel 3; ``log2(stride)`` of its
    convolutions halve the frame rate: 16000 / hop / stride frames per second) and
    ``n_layers - 1`` pre-norm transformer layers.

    The fixed part needs the audiogram, so this front end has ``wants_audiogram``;
    :meth:`precompute` exposes it so training can cache it, and
    :meth:`forward_features` runs the learned part on it.
    """

    external_weights = False
    wants_calibrated_input = True
    wants_audiogram = True
    accepts_gain = True
    N_FFT, HOP = 512, 320

    def __init__(self, n_bands: int = 48, f_min_hz: float = 80.0, f_max_hz: float = 7800.0, dim: int = 128,
                 n_layers: int = 2, n_heads: int = 4, ffn_dim: int = 256, stride: int = 8, dropout: float = 0.1,
                 n_fft: int = 512, hop: int = 320, haaqi_level: bool = False, clip_inputs: int = 0,
                 level_channels: bool = False):
        super().__init__()
        if level_channels and not clip_inputs:
            raise BenchError("auditory front end: level_channels needs clip inputs (HAAQINet's input_level=True)")
        if n_layers < 1 or dim % n_heads:
            raise BenchError(
                f"auditory front end: need n_layers >= 1 and dim divisible by n_heads (got {n_layers}, {dim}/{n_heads})"
            )
        if stride not in (1, 2, 4, 8):
            raise BenchError(f"auditory front end: stride must be 1, 2, 4 or 8 (got {stride})")
        if n_fft < 64 or n_fft % 2 or not 16 <= hop <= 4 * n_fft:
            raise BenchError(f"auditory front end: need an even n_fft >= 64 and 16 <= hop <= 4 n_fft "
                             f"(got n_fft={n_fft}, hop={hop})")
        self.N_FFT, self.HOP = int(n_fft), int(hop)  # instance values shadow the class defaults (512, 320)
        self.n_bands, self.n_layers, self.dim, self.stride = n_bands, n_layers, dim, stride
        self.haaqi_level = bool(haaqi_level)
        if self.haaqi_level and not (f_min_hz < 250.0 and f_max_hz > 6000.0):
            raise BenchError("auditory front end: haaqi_level needs bands from below 250 Hz to above 6 kHz, "
                             f"HAAQI's audiogram range (got {f_min_hz}-{f_max_hz} Hz)")
        self.n_maps = 5 if self.haaqi_level else 4
        self._n_halvings = int(round(math.log2(stride)))
        self.frames_per_second = self.sample_rate_hz / self.HOP / stride
        e = torch.linspace(_erb_rate(f_min_hz), _erb_rate(f_max_hz), n_bands + 2, dtype=torch.float64)
        edges = (10.0 ** (e / 21.4) - 1.0) / 0.00437  # band edges/centres in Hz
        freqs = torch.arange(self.N_FFT // 2 + 1, dtype=torch.float64) * self.sample_rate_hz / self.N_FFT
        lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
        tri = torch.clamp(torch.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), min=0.0)
        nearest = torch.argmin((freqs[None, :] - mid).abs(), dim=1)  # narrow low bands keep their nearest bin
        tri[torch.arange(n_bands), nearest] = torch.clamp(tri[torch.arange(n_bands), nearest], min=1.0)
        self.register_buffer("bands", tri.float(), persistent=False)  # (n_bands, n_bins)
        centres = mid[:, 0].clamp(min=_AUDIOGRAM_HZ[0], max=_AUDIOGRAM_HZ[-1]).log()
        grid = torch.tensor(_AUDIOGRAM_HZ, dtype=torch.float64).log()
        j = torch.searchsorted(grid, centres).clamp(1, len(grid) - 1)
        w = (centres - grid[j - 1]) / (grid[j] - grid[j - 1])
        interp = torch.zeros(n_bands, len(grid), dtype=torch.float64)
        interp[torch.arange(n_bands), j - 1] = 1 - w
        interp[torch.arange(n_bands), j] = w
        self.register_buffer("interp", interp.float(), persistent=False)  # (n_bands, 8)
        self.register_buffer("retspl", torch.tensor(RETSPL_DB), persistent=False)
        self.register_buffer("window", torch.hann_window(self.N_FFT, periodic=True), persistent=False)
        self._centre_hz = mid[:, 0].numpy()
        n_in = self.n_maps * n_bands
        self.clip_inputs = int(clip_inputs)
        self.level_channels = bool(level_channels)
        self.stats = nn.Linear(2 * n_in + n_bands + self.clip_inputs, dim)
        n_stem = n_in + (self.clip_inputs if self.level_channels else 0)
        stem = [nn.Conv1d(n_stem, dim, kernel_size=3, padding=1), nn.GELU()]
        for _ in range(self._n_halvings):  # each halves the frame rate
            stem += [nn.Conv1d(dim, dim, kernel_size=3, stride=2, padding=1), nn.GELU()]
        self.stem = nn.Sequential(*stem)
        self.pos_conv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.stem_norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, n_heads, ffn_dim, dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(n_layers - 1)
        )

    def thresholds_db_spl(self, audiogram_db_hl: torch.Tensor) -> torch.Tensor:
        """(B, 8) dB HL -> (B, n_bands) threshold in dB SPL at each band centre."""
        return (audiogram_db_hl.float() + self.retspl) @ self.interp.T

    def stft(self, x: torch.Tensor) -> torch.Tensor:
        """``torch.stft(x, center=True)`` (reflect padding) without copying the signal: (B, n) -> (B, n_bins, T).

        Frames that need no padding come from the signal itself; the few at each end from short
        reflect-padded pieces. The frames hold the same samples as ``center=True``'s.
        """
        n, half, hop = x.shape[1], self.N_FFT // 2, self.HOP
        n_frames = n // hop + 1
        k_lo = -(-half // hop)  # first frame that needs no left padding
        k_hi = (n - half) // hop  # last frame that needs no right padding
        if n <= half + 1 or k_hi < k_lo or (k_lo - 1) * hop + half > n:
            return torch.stft(x, self.N_FFT, hop, window=self.window, center=True, return_complex=True)

        def frames(piece):
            return torch.stft(piece, self.N_FFT, hop, window=self.window, center=False, return_complex=True)

        head = torch.cat([x[:, 1:half + 1].flip(1), x[:, :(k_lo - 1) * hop + half]], dim=1)
        parts = [frames(head)[..., :k_lo], frames(x[:, k_lo * hop - half:k_hi * hop + half])]
        if k_hi + 1 < n_frames:
            tail = torch.cat([x[:, (k_hi + 1) * hop - half:], x[:, -half - 1:-1].flip(1)], dim=1)
            parts.append(frames(tail)[..., :n_frames - 1 - k_hi])
        return torch.cat(parts, dim=2)

    def precompute(self, waveform_16k: torch.Tensor, audiogram_db_hl: torch.Tensor,
                   gain: torch.Tensor | None = None) -> torch.Tensor:
        """The fixed maps: calibrated (B, n) and (B, 8) dB HL -> (B, T, n_maps * n_bands).

        ``gain``: optional (B,) calibration gain (:func:`calibration_gain`) of an uncalibrated waveform,
        applied to the power spectrum (the same maps as for ``waveform * gain``).
        """
        spec = self.stft(waveform_16k.float())  # (B, n_bins, T)
        scale = torch.full((spec.shape[1], 1), 2.0, device=spec.device)
        scale[0], scale[-1] = 1.0, 1.0
        scale = scale / (self.N_FFT * self.window.square().sum())  # band powers are mean squares
        if gain is not None:
            scale = scale * gain.float().square()[:, None, None]  # (B, n_bins, 1)
        power = spec.real.square().add(spec.imag.square()) * scale
        band = torch.einsum("kf,bft->btk", self.bands, power)  # (B, T, n_bands)
        level = 10.0 * torch.log10(band + 1e-13) + CALIBRATED_DB_SPL_AT_RMS1
        level = level.clamp(min=-10.0)
        norm = self.bands.sum(dim=1)  # (n_bands,)
        log_geo = torch.einsum("kf,bft->btk", self.bands, torch.log(power + 1e-13)) / norm
        flat_db = 10.0 / math.log(10.0) * (log_geo - torch.log(band / norm + 1e-13))
        thr = self.thresholds_db_spl(audiogram_db_hl)[:, None, :].expand_as(level)  # (B, T, n_bands)
        maps = [(level - 50.0) / 20.0, (level - thr).clamp(min=-30.0) / 20.0,
                (thr - 40.0) / 30.0, flat_db.clamp(min=-30.0) / 10.0]
        if self.haaqi_level:
            maps.append(haaqi_sensation_db(level, audiogram_db_hl, self._centre_hz) / 20.0)
        return torch.cat(maps, dim=2)

    def forward_features(self, feats: torch.Tensor, clip_inputs: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The learned part: (B, T, n_maps * n_bands) maps -> n_layers hidden states, each (B, T', dim).

        ``clip_inputs``: (B, ``clip_inputs``) values per clip (the presentation level, :class:`HAAQINet`'s
        ``input_level``) that join the clip statistics, required when the front end was built for them.
        """
        if self.clip_inputs and (clip_inputs is None or tuple(clip_inputs.shape) != (feats.shape[0], self.clip_inputs)):
            raise BenchError(f"this auditory front end needs ({feats.shape[0]}, {self.clip_inputs}) clip inputs; got "
                             f"{None if clip_inputs is None else tuple(clip_inputs.shape)}")
        feats = feats.float()
        level = feats[..., :self.n_bands]
        mean = feats.mean(dim=1, keepdim=True)
        std = ((feats - mean).square().sum(dim=1) / max(feats.shape[1] - 1, 1)).sqrt()  # = std(dim=1), faster
        stats = [mean[:, 0], std, (level[:, 1:] - level[:, :-1]).abs().mean(dim=1)]
        if self.clip_inputs:
            stats.append(clip_inputs.to(feats.dtype))
        stats = torch.cat(stats, dim=1)  # (B, 2 * n_in + n_bands + clip_inputs)
        if self.level_channels:  # the clip inputs also enter the stem, as channels constant over the frames
            feats = torch.cat([feats, clip_inputs.to(feats.dtype)[:, None, :].expand(-1, feats.shape[1], -1)], dim=2)
        x = self.stem(feats.transpose(1, 2))  # (B, dim, T')
        x = x + self.stats(stats).unsqueeze(2)
        x = self.stem_norm((x + self.pos_conv(x)).transpose(1, 2))  # (B, T', dim)
        hidden = [x]
        for layer in self.layers:
            x = layer(x)
            hidden.append(x)
        return hidden

    def forward(self, waveform_16k: torch.Tensor, audiogram_db_hl: torch.Tensor,
                gain: torch.Tensor | None = None, clip_inputs: torch.Tensor | None = None) -> list[torch.Tensor]:
        """(B, n) calibrated (or with its ``gain``), (B, 8) dB HL -> n_layers hidden states, each (B, T', dim)."""
        return self.forward_features(self.precompute(waveform_16k, audiogram_db_hl, gain), clip_inputs)

    def n_frames(self, n_samples: int) -> int:
        frames = n_samples // self.HOP + 1
        for _ in range(self._n_halvings):  # kernel 3, stride 2, padding 1
            frames = (frames - 1) // 2 + 1
        return frames
