"""Kaldi-compatible log-mel filterbank in pure torch, batched.

This reproduces ``compute-fbank-feats`` (and so ``torchaudio.compliance.kaldi.fbank``,
which BEATs was trained with) for the options BEATs uses:

* frames of 25 ms every 10 ms, ``snip_edges``: only whole frames, the first one
  starting at sample 0, so ``n_frames = 1 + (n_samples - 400) // 160`` at 16 kHz;
* no dither; the DC offset (frame mean) removed; pre-emphasis 0.97, the first
  sample of a frame pre-emphasised against itself;
* the "povey" window, ``(0.5 - 0.5 cos(2 pi n / (N - 1))) ** 0.85``;
* zero-padding to the next power of two (512 samples) and the power spectrum;
* 128 triangular filters equally spaced on Kaldi's mel scale
  ``1127 ln(1 + f / 700)`` between 20 Hz and the Nyquist frequency;
* the natural log, floored at float32 epsilon; no energy term.

Layout: ``waveform`` is ``(n_batch, n_samples)``; the result is
``(n_batch, n_frames, n_mels)``. torchaudio is never imported (it does not load
beside this torch).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

#: Kaldi's log floor: float32 machine epsilon.
KALDI_LOG_FLOOR = float(torch.finfo(torch.float32).eps)


def mel_scale(freq_hz):
    """Kaldi's mel scale, ``1127 ln(1 + f / 700)``; works on floats and tensors."""
    if isinstance(freq_hz, torch.Tensor):
        return 1127.0 * torch.log1p(freq_hz / 700.0)
    return 1127.0 * math.log1p(freq_hz / 700.0)


@lru_cache(maxsize=16)
def _mel_banks(n_mels: int, n_fft: int, sample_rate_hz: int, low_hz: float, high_hz: float) -> torch.Tensor:
    """Triangular mel filters, float32 tensor of shape (n_fft // 2 + 1, n_mels).

    The Nyquist bin gets weight 0, as in Kaldi (filters cover bins 0 .. n_fft/2 - 1).
    """
    nyquist = 0.5 * sample_rate_hz
    if high_hz <= 0.0:
        high_hz = nyquist + high_hz
    if not 0.0 <= low_hz < high_hz <= nyquist:
        raise ValueError(f"bad mel range {low_hz}..{high_hz} Hz for {sample_rate_hz} Hz audio")
    mel_low, mel_high = mel_scale(low_hz), mel_scale(high_hz)
    mel_step = (mel_high - mel_low) / (n_mels + 1)
    bins = torch.arange(n_mels, dtype=torch.float64).unsqueeze(1)  # (n_mels, 1)
    left = mel_low + bins * mel_step
    center = left + mel_step
    right = center + mel_step
    freqs = torch.arange(n_fft // 2, dtype=torch.float64) * (sample_rate_hz / n_fft)
    mel = mel_scale(freqs).unsqueeze(0)  # (1, n_fft // 2)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    weights = torch.clamp(torch.minimum(up, down), min=0.0)  # (n_mels, n_fft // 2)
    weights = torch.cat([weights, torch.zeros(n_mels, 1, dtype=torch.float64)], dim=1)
    return weights.T.contiguous().to(torch.float32)  # (n_fft // 2 + 1, n_mels)


@lru_cache(maxsize=16)
def _povey_window(n: int) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)
    return ((0.5 - 0.5 * torch.cos(2.0 * math.pi * k / (n - 1))) ** 0.85).to(torch.float32)


def n_fbank_frames(n_samples: int, *, sample_rate_hz: int = 16000,
                   frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0) -> int:
    """Number of ``snip_edges`` frames in a signal of ``n_samples`` samples."""
    length = int(sample_rate_hz * frame_length_ms * 0.001)
    shift = int(sample_rate_hz * frame_shift_ms * 0.001)
    return 0 if n_samples < length else 1 + (n_samples - length) // shift


def kaldi_fbank(
    waveform: torch.Tensor,
    *,
    sample_rate_hz: int = 16000,
    n_mels: int = 128,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    preemphasis: float = 0.97,
    low_hz: float = 20.0,
    high_hz: float = 0.0,
    log_floor: float = KALDI_LOG_FLOOR,
) -> torch.Tensor:
    """Kaldi log-mel filterbank of a batch of signals.

    Args:
        waveform: float tensor, shape (n_batch, n_samples), any scale (Kaldi
            convention: 16-bit integer range).
        sample_rate_hz: sampling rate of ``waveform``.
        n_mels: number of triangular mel filters.
        frame_length_ms: analysis frame length.
        frame_shift_ms: hop between frames.
        preemphasis: pre-emphasis coefficient.
        low_hz: lower edge of the first filter.
        high_hz: upper edge of the last filter; ``<= 0`` means Nyquist plus ``high_hz``.
        log_floor: power floor before the natural log (Kaldi: float32 epsilon).

    Returns:
        float32 tensor, shape (n_batch, n_frames, n_mels): natural log of mel power.
    """
    if waveform.dim() != 2:
        raise ValueError(f"waveform must be (n_batch, n_samples), got shape {tuple(waveform.shape)}")
    x = waveform.to(torch.float32)
    length = int(sample_rate_hz * frame_length_ms * 0.001)
    shift = int(sample_rate_hz * frame_shift_ms * 0.001)
    n_fft = 1 << (length - 1).bit_length()  # next power of two (400 -> 512)
    if x.shape[1] < length:
        return x.new_zeros(x.shape[0], 0, n_mels)
    frames = x.unfold(1, length, shift)  # (B, n_frames, length)
    frames = frames - frames.mean(dim=2, keepdim=True)  # remove DC offset
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=2)  # x[n-1], x[-1] := x[0]
    frames = frames - preemphasis * previous
    frames = frames * _povey_window(length).to(frames.device)
    spectrum = torch.fft.rfft(frames, n=n_fft, dim=2)  # (B, n_frames, n_fft // 2 + 1)
    power = spectrum.real.square() + spectrum.imag.square()
    banks = _mel_banks(n_mels, n_fft, sample_rate_hz, float(low_hz), float(high_hz)).to(power.device)
    mel = power @ banks  # (B, n_frames, n_mels)
    return torch.log(torch.clamp(mel, min=log_floor))
