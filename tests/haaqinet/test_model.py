"""HAAQINet: shapes, score range, level handling, masking, freezing and an overfitting check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.errors import BenchError
from haaqinet.beats import BEATs, BEATsConfig, save_beats_checkpoint
from haaqinet.frontends import BUILTIN, Frontend
from haaqinet.model import HAAQINet, count_parameters, haaqinet_loss

TINY_MEL = dict(frontend="mel", frontend_args=dict(dim=32, n_layers=2, n_heads=2, ffn_dim=64),
                adapter_dim=16, lstm_hidden=8, attention_dim=16, attention_heads=4, dropout=0.0)
TINY_BEATS_CFG = dict(embed_dim=16, encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
                      encoder_attention_heads=4, conv_pos=16, conv_pos_groups=4, num_buckets=32, max_distance=64)
N = 8000  # 0.5 s at 16 kHz


def _inputs(batch: int = 2, n: int = N, seed: int = 0):
    rng = np.random.default_rng(seed)
    wave = torch.tensor(0.1 * rng.standard_normal((batch, n)), dtype=torch.float32)
    audiogram = torch.tensor(rng.uniform(0, 80, (batch, 8)), dtype=torch.float32)
    spl = torch.tensor(rng.uniform(55, 75, batch), dtype=torch.float32)
    return wave, audiogram, spl


def _tiny_mel_model(seed: int = 0) -> HAAQINet:
    torch.manual_seed(seed)
    return HAAQINet(**TINY_MEL)


def test_mel_model_shapes_and_range():
    model = _tiny_mel_model().eval()
    with torch.no_grad():
        clip, frames = model(*_inputs())
    assert clip.shape == (2,) and frames.shape == (2, model.frontend.n_frames(N)) == (2, 12)
    assert bool(((clip > 0) & (clip < 1)).all()) and bool(((frames > 0) & (frames < 1)).all())
    torch.testing.assert_close(clip, frames.mean(1))
    assert HAAQINet(**model.model_args).model_args == model.model_args
    assert not model.freeze_frontend and model.stores_frontend_weights


def test_default_mel_model_size():
    model = HAAQINet()
    assert model.frontend.n_layers == 4 and model.frontend.dim == 256
    assert 2.0e6 < count_parameters(model) < 3.0e6


def test_level_reaches_the_model_but_digital_gain_does_not():
    model = _tiny_mel_model().eval()
    wave, audiogram, spl = _inputs()
    with torch.no_grad():
        base, _ = model(wave, audiogram, spl)
        louder, _ = model(wave, audiogram, spl + 20)
        rescaled, _ = model(0.1 * wave, audiogram, spl)  # same sound, other digital scale
    assert not torch.allclose(base, louder)
    torch.testing.assert_close(base, rescaled, atol=1e-5, rtol=0)


def test_input_checks():
    model = _tiny_mel_model().eval()
    wave, audiogram, spl = _inputs()
    with pytest.raises(BenchError, match="audiogram_db_hl"):
        model(wave, audiogram[:, :6], spl)
    with pytest.raises(BenchError, match="spl_db"):
        model(wave, audiogram, spl[:1])
    with pytest.raises(BenchError, match="too short"):
        model(wave[:, :300], audiogram, spl)


def test_padding_is_masked():
    model = _tiny_mel_model().eval()
    wave, audiogram, spl = _inputs()
    wave[1, 4000:] = 0.0
    with torch.no_grad():
        clip, frames = model(wave, audiogram, spl, n_samples=torch.tensor([N, 4000]))
    valid = model.frontend.n_frames(4000)
    assert valid == 6 and bool((frames[1, valid:] == 0).all()) and bool((frames[1, :valid] > 0).all())
    torch.testing.assert_close(clip[1], frames[1, :valid].mean())


def test_loss_known_value():
    loss = haaqinet_loss(torch.tensor([0.5]), torch.tensor([[0.5, 0.7]]), torch.tensor([0.6]))
    assert float(loss) == pytest.approx(0.01 + 0.01)
    masked = haaqinet_loss(torch.tensor([0.5]), torch.tensor([[0.5, 0.0]]), torch.tensor([0.6]),
                           frame_mask=torch.tensor([[True, False]]))
    assert float(masked) == pytest.approx(0.01 + 0.01)


def test_loss_decreases_when_overfitting_four_examples():
    model = _tiny_mel_model(seed=1).train()
    wave, audiogram, spl = _inputs(batch=4, seed=1)
    target = torch.tensor([0.1, 0.4, 0.6, 0.9])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        optimiser.zero_grad()
        loss = haaqinet_loss(*model(wave, audiogram, spl), target)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.3 * losses[0], losses


def test_tiny_beats_model_is_frozen_by_default(tmp_path):
    torch.manual_seed(0)
    save_beats_checkpoint(tmp_path / "b.pt", BEATs(BEATsConfig(**TINY_BEATS_CFG)))
    torch.manual_seed(0)
    model = HAAQINet(frontend="beats", frontend_args={"checkpoint_path": str(tmp_path / "b.pt")},
                     adapter_dim=16, lstm_hidden=8, attention_dim=16, attention_heads=4).train()
    assert model.freeze_frontend and not model.stores_frontend_weights
    assert not model.frontend.training and not any(p.requires_grad for p in model.frontend.parameters())
    clip, frames = model(*_inputs())
    assert clip.shape == (2,) and frames.shape == (2, 24)
    haaqinet_loss(clip, frames, torch.tensor([0.2, 0.8])).backward()
    assert model.adapter.weight.grad is not None


class _Fixed768(Frontend):
    """Test double shaped like BEATs: 12 layers of width 768, 50 frames per second."""

    n_layers, dim, frames_per_second = 12, 768, 50.0

    def forward(self, waveform_16k):
        n = self.n_frames(waveform_16k.shape[1])
        return [torch.zeros(waveform_16k.shape[0], n, self.dim) for _ in range(self.n_layers)]

    def n_frames(self, n_samples):
        return n_samples // 320


def test_head_size_matches_the_paper(monkeypatch):
    monkeypatch.setitem(BUILTIN, "fixed768", _Fixed768)
    model = HAAQINet(frontend="fixed768")
    # paper: ~0.82 M; one more BLSTM input (the level) adds 800
    assert 0.81e6 < count_parameters(model) < 0.83e6
    assert model.blstm.input_size == 256 + 8 + 1


def test_score_map_is_monotone_bounded_starts_at_identity_and_round_trips(tmp_path):
    from haaqinet.checkpoint import load_checkpoint, save_checkpoint
    from haaqinet.model import ScoreMap

    g = ScoreMap()
    s = torch.linspace(0.001, 0.999, 999)
    with torch.no_grad():
        assert (g(s) - s).abs().max() < 1e-5
        g.slope_raw.fill_(2.0)
        g.shift.fill_(-1.0)
        g.lo.fill_(0.2)
        g.span_raw.fill_(-0.5)
        y = g(s)
    assert (y[1:] > y[:-1]).all() and 0.2 < float(y.min()) and float(y.max()) < 0.2 + 0.475
    with torch.no_grad():
        g.lo.fill_(-0.3)
        g.span_raw.fill_(2.0)
        y = g(s)
    assert (y[1:] >= y[:-1]).all() and float(y.min()) == 0.0 and float(y.max()) == 1.0   # kept in 0-1
    model = HAAQINet(frontend="mel", frontend_args={"dim": 16, "n_layers": 1, "n_heads": 2}, adapter_dim=8,
                     lstm_hidden=4, attention_dim=8, attention_heads=2)
    assert "score_map" not in model.model_args
    x, a, spl = torch.randn(2, 16000) * 0.1, torch.zeros(2, 8), torch.tensor([60.0, 70.0])
    model.eval()
    with torch.no_grad():
        before, _ = model(x, a, spl)
        model.add_score_map()
        assert (model(x, a, spl)[0] - before).abs().max() < 1e-5
        model.score_map.shift.fill_(0.7)
        after, frames = model(x, a, spl, torch.tensor([16000, 8000]))
    assert model.model_args["score_map"] is True and frames[1, -1] == 0   # padding stays 0
    save_checkpoint(tmp_path / "m.pt", model)
    again = load_checkpoint(tmp_path / "m.pt").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x, a, spl, torch.tensor([16000, 8000]))[0], after)
