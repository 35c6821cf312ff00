"""Front ends: Kaldi fbank against an independent numpy reference, the registry,
and the mel / beats / hf front ends (tiny models, fixed seeds)."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

from benchmark.errors import BenchError
from haaqinet.beats import (
    BEATs,
    BEATsConfig,
    BEATsFrontend,
    _Attention,
    load_beats_checkpoint,
    relative_position_buckets,
    save_beats_checkpoint,
)
from haaqinet.fbank import KALDI_LOG_FLOOR, kaldi_fbank, n_fbank_frames
from haaqinet.frontends import MelFrontend, available_frontends, calibrate_to_spl, create_frontend

SR = 16000


def _signal(n_samples: int, seed: int = 0) -> np.ndarray:
    """A fixed test signal: 440 Hz + 3 kHz tones and a little noise, full scale ~0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / SR
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.15 * np.sin(2 * np.pi * 3000 * t)
            + 0.02 * rng.standard_normal(n_samples))


# ----------------------------------------------------------------------------- fbank
def kaldi_fbank_reference(x: np.ndarray, n_mels: int = 128) -> np.ndarray:
    """The Kaldi recipe (compute-fbank-feats defaults, no dither), one frame at a time."""
    length, shift, n_fft = 400, 160, 512
    mel = lambda f: 1127.0 * math.log(1.0 + f / 700.0)  # noqa: E731
    lo, hi = mel(20.0), mel(SR / 2)
    step = (hi - lo) / (n_mels + 1)
    banks = np.zeros((n_mels, n_fft // 2 + 1))
    for b in range(n_mels):
        left, center, right = lo + b * step, lo + (b + 1) * step, lo + (b + 2) * step
        for k in range(n_fft // 2):  # the Nyquist bin keeps weight 0
            m = mel(k * SR / n_fft)
            if left < m < right:
                banks[b, k] = (m - left) / (center - left) if m <= center else (right - m) / (right - center)
    window = np.array([(0.5 - 0.5 * math.cos(2 * math.pi * i / (length - 1))) ** 0.85 for i in range(length)])
    n_frames = 1 + (len(x) - length) // shift
    out = np.zeros((n_frames, n_mels))
    for f in range(n_frames):
        frame = np.array(x[f * shift: f * shift + length], dtype=np.float64)
        frame -= frame.mean()
        for i in range(length - 1, 0, -1):
            frame[i] -= 0.97 * frame[i - 1]
        frame[0] -= 0.97 * frame[0]
        frame *= window
        padded = np.zeros(n_fft)
        padded[:length] = frame
        power = np.abs(np.fft.rfft(padded)) ** 2
        out[f] = np.log(np.maximum(banks @ power, KALDI_LOG_FLOOR))
    return out


def test_fbank_matches_numpy_kaldi_reference():
    x = _signal(4000) * 2**15  # 0.25 s in Kaldi's 16-bit range
    expected = kaldi_fbank_reference(x)
    got = kaldi_fbank(torch.tensor(x, dtype=torch.float32).unsqueeze(0))[0].numpy()
    assert got.shape == expected.shape == (23, 128)
    np.testing.assert_allclose(got, expected, atol=2e-3, rtol=0)


def test_fbank_batched_frames_and_short_input():
    x = torch.tensor(np.stack([_signal(3200, 1), _signal(3200, 2)]), dtype=torch.float32)
    both = kaldi_fbank(x)
    assert both.shape == (2, n_fbank_frames(3200), 128) == (2, 18, 128)
    torch.testing.assert_close(both[1], kaldi_fbank(x[1:])[0])
    assert kaldi_fbank(torch.zeros(1, 399)).shape == (1, 0, 128)
    assert n_fbank_frames(160000) == 998


def test_fbank_tone_peaks_at_its_mel_band():
    t = torch.arange(4000) / SR
    fb = kaldi_fbank((0.5 * 2**15 * torch.sin(2 * math.pi * 1000 * t)).unsqueeze(0))[0]
    mel = lambda f: 1127.0 * math.log(1.0 + f / 700.0)  # noqa: E731
    step = (mel(8000) - mel(20)) / 129
    centre_band = round((mel(1000) - mel(20)) / step) - 1  # band whose centre is nearest 1 kHz
    assert int(fb.mean(0).argmax()) == centre_band


def test_fbank_regression_value():
    x = torch.tensor(_signal(4000) * 2**15, dtype=torch.float32).unsqueeze(0)
    fb = kaldi_fbank(x)[0]
    assert float(fb.mean()) == pytest.approx(REGRESSION["fbank_mean"], abs=1e-4)
    assert float(fb[10, 20]) == pytest.approx(REGRESSION["fbank_10_20"], abs=1e-4)


# -------------------------------------------------------------------------- registry
def test_registry_names_and_did_you_mean():
    assert {"mel", "beats", "hf"} <= set(available_frontends())
    with pytest.raises(BenchError, match="did you mean 'mel'"):
        create_frontend("mle")
    with pytest.raises(BenchError, match="no option 'dimm'.*did you mean 'dim'"):
        create_frontend("mel", dimm=8)
    with pytest.raises(BenchError, match="needs checkpoint_path"):
        create_frontend("beats")


# ------------------------------------------------------------------------------- mel
def _tiny_mel() -> MelFrontend:
    torch.manual_seed(0)
    return create_frontend("mel", dim=32, n_layers=3, n_heads=2, ffn_dim=64).eval()


def test_mel_shapes_and_frame_count():
    fe = _tiny_mel()
    x = torch.tensor(np.stack([_signal(8000, 0), _signal(8000, 1)]), dtype=torch.float32)
    with torch.no_grad():
        hidden = fe(x)
    assert len(hidden) == fe.n_layers == 3
    assert all(h.shape == (2, fe.n_frames(8000), 32) for h in hidden)
    assert fe.n_frames(8000) == 12 and fe.frames_per_second == 25.0 and fe.sample_rate_hz == 16000


def test_mel_features_keep_the_level():
    """A fixed affine map of log power: +6 dB shifts every band by ln(4) / LOG_SCALE.

    (The lowest mel bands are narrower than an FFT bin and sit at the floor.)
    """
    fe = _tiny_mel()
    x = torch.tensor(_signal(4000), dtype=torch.float32).unsqueeze(0) * 0.01
    quiet, loud = fe.features(x), fe.features(2 * x)
    floor = (math.log(fe.LOG_FLOOR) - fe.LOG_OFFSET) / fe.LOG_SCALE
    above = quiet > floor + 1e-3
    assert above.float().mean() > 0.9
    diff = (loud - quiet)[above]
    torch.testing.assert_close(diff, torch.full_like(diff, math.log(4) / fe.LOG_SCALE), atol=1e-4, rtol=0)


def test_calibrate_to_spl():
    x = torch.tensor(np.stack([_signal(4000), 0.001 * _signal(4000)]), dtype=torch.float32)
    y = calibrate_to_spl(x, torch.tensor([100.0, 60.0]))
    rms = y.square().mean(1).sqrt()
    torch.testing.assert_close(rms, torch.tensor([1.0, 0.01]), rtol=1e-5, atol=0)
    silent = calibrate_to_spl(torch.zeros(1, 100), torch.tensor([65.0]))
    assert torch.equal(silent, torch.zeros(1, 100))


def test_mel_regression_value():
    fe = _tiny_mel()
    x = torch.tensor(_signal(8000), dtype=torch.float32).unsqueeze(0)
    with torch.no_grad():
        hidden = fe(calibrate_to_spl(x, torch.tensor([65.0])))
    assert float(hidden[-1].mean()) == pytest.approx(REGRESSION["mel_last_mean"], abs=1e-4)
    assert float(hidden[0][0, 3, :4].sum()) == pytest.approx(REGRESSION["mel_first_0_3"], abs=1e-4)


# ----------------------------------------------------------------------------- beats
TINY_BEATS = dict(embed_dim=16, encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
                  encoder_attention_heads=4, conv_pos=16, conv_pos_groups=4, num_buckets=32, max_distance=64)


def _tiny_beats(tmp_path, seed: int = 0, name: str = "beats_tiny.pt", **overrides):
    torch.manual_seed(seed)
    model = BEATs(BEATsConfig(**{**TINY_BEATS, **overrides})).eval()
    path = tmp_path / name
    save_beats_checkpoint(path, model)
    return model, path


def test_beats_checkpoint_round_trip_strict(tmp_path):
    model, path = _tiny_beats(tmp_path)
    ckpt = torch.load(path, weights_only=True)
    assert set(ckpt) == {"cfg", "model"} and ckpt["cfg"]["encoder_layers"] == 2
    assert "encoder.pos_conv.0.weight_g" in ckpt["model"] and "patch_embedding.weight" in ckpt["model"]
    fe = create_frontend("beats", checkpoint_path=str(path))
    x = torch.tensor(np.stack([_signal(8000, 0), _signal(8000, 1)]), dtype=torch.float32)
    with torch.no_grad():
        ours, ref = fe(x), model(x)
    assert len(ours) == fe.n_layers == 2 and fe.dim == 32 and fe.frames_per_second == 50.0
    # 0.5 s: 48 fbank frames -> 3 time patches x 8 frequency patches
    assert all(h.shape == (2, 24, 32) for h in ours) and fe.n_frames(8000) == 24
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_beats_full_size_token_count():
    small = BEATsConfig(encoder_layers=1, encoder_embed_dim=8, encoder_ffn_embed_dim=8,
                        encoder_attention_heads=1, embed_dim=8, conv_pos=4, conv_pos_groups=1)
    assert BEATs(small).n_tokens(160000) == 496  # 10 s: 998 frames -> 62 x 8 patches


def test_beats_accepts_bias_table_listed_once(tmp_path):
    model, path = _tiny_beats(tmp_path)
    ckpt = torch.load(path, weights_only=True)
    del ckpt["model"]["encoder.layers.1.self_attn.relative_attention_bias.weight"]
    torch.save(ckpt, path)
    loaded = load_beats_checkpoint(path)
    torch.testing.assert_close(loaded.encoder.layers[1].self_attn.relative_attention_bias.weight,
                               model.encoder.layers[0].self_attn.relative_attention_bias.weight)


def test_beats_errors(tmp_path):
    with pytest.raises(BenchError, match="not found"):
        BEATsFrontend(str(tmp_path / "nope.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(BenchError, match="not a readable torch checkpoint"):
        BEATsFrontend(str(junk))
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(BenchError, match="not a BEATs checkpoint"):
        BEATsFrontend(str(other))
    _, path = _tiny_beats(tmp_path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["cfg"]["encoder_layers"] = 3
    torch.save(ckpt, path)
    with pytest.raises(BenchError, match="do not match its BEATs config"):
        BEATsFrontend(str(path))


def test_relative_position_buckets_known_values():
    b = relative_position_buckets(801, 801, num_buckets=320, max_distance=800)  # b[q, k], offset k - q
    assert b[5, 5] == 0 and b[5, 6] == 161 and b[6, 5] == 1 and b[79, 0] == 79
    assert b[80, 0] == 80  # first logarithmic bucket
    assert b[800, 0] == 159 and b[0, 800] == 319  # clamped at max_distance


def test_beats_attention_matches_the_written_out_formula():
    """softmax(q.k * d^-1/2 - rowmax + gate * bias) v, as in the BEATs paper's code."""
    torch.manual_seed(1)
    attn = _Attention(BEATsConfig(**TINY_BEATS)).eval()
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        out, pos_bias = attn(x, None)
        B, T, H, d = 2, 7, 4, 8
        q = attn.q_proj(x).view(B, T, H, d).permute(0, 2, 1, 3)
        k = attn.k_proj(x).view(B, T, H, d).permute(0, 2, 1, 3)
        v = attn.v_proj(x).view(B, T, H, d).permute(0, 2, 1, 3)
        logits = torch.einsum("bhqd,bhkd->bhqk", q * d**-0.5 / 32, k)
        logits = (logits - logits.amax(-1, keepdim=True)) * 32
        bias = attn.relative_attention_bias(relative_position_buckets(T, T, 32, 64)).permute(2, 0, 1)
        g = torch.sigmoid(attn.grep_linear(q).view(B, H, T, 2, 4).sum(-1))
        gate = g[..., :1] * (g[..., 1:] * attn.grep_a - 1.0) + 2.0
        probs = torch.softmax(logits + gate * bias, dim=-1)
        expected = attn.out_proj(torch.einsum("bhqk,bhkd->bqhd", probs, v).reshape(B, T, 32))
    torch.testing.assert_close(pos_bias, bias)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_beats_regression_value(tmp_path):
    _, path = _tiny_beats(tmp_path)
    fe = BEATsFrontend(str(path))
    x = torch.tensor(_signal(8000), dtype=torch.float32).unsqueeze(0)
    with torch.no_grad():
        hidden = fe(x)
    assert float(hidden[-1][0, :, 0].sum()) == pytest.approx(REGRESSION["beats_last_col0"], abs=1e-4)
    assert float(hidden[0][0, 5, :5].sum()) == pytest.approx(REGRESSION["beats_first_5"], abs=1e-4)


# -------------------------------------------------------------------------------- hf
@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers not installed")
def test_hf_tiny_wav2vec2(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    from haaqinet.hf import _import_transformers

    transformers = _import_transformers()
    config = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, vocab_size=8,
    )
    torch.manual_seed(0)
    transformers.Wav2Vec2Model(config).save_pretrained(tmp_path / "w2v")
    transformers.Wav2Vec2FeatureExtractor().save_pretrained(tmp_path / "w2v")
    fe = create_frontend("hf", model_dir=str(tmp_path / "w2v"))
    assert fe.n_layers == 3 and fe.dim == 32 and fe.frames_per_second == 800.0
    x = torch.tensor(np.stack([_signal(4000, 0), _signal(4000, 1)]), dtype=torch.float32)
    with torch.no_grad():
        hidden = fe(x)
        rescaled = fe(10 * x)  # wav2vec 2.0's feature extractor normalises each clip
    assert len(hidden) == 3 and all(h.shape == (2, fe.n_frames(4000), 32) for h in hidden)
    torch.testing.assert_close(hidden[-1], rescaled[-1], atol=1e-4, rtol=1e-4)
    with pytest.raises(BenchError, match="not a transformers model directory"):
        create_frontend("hf", model_dir=str(tmp_path / "missing"))


# Frozen from this implementation after the fbank and attention checks above passed.
REGRESSION = {
    "fbank_mean": 17.366436,  # the numpy reference gives 17.366436
    "fbank_10_20": 18.538361,  # the numpy reference gives 18.538361
    "mel_last_mean": -0.0826407,
    "mel_first_0_3": -0.6774073,
    "beats_last_col0": -0.7398095,
    "beats_first_5": 0.2977656,
}
