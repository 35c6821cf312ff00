"""The ``auditory`` front end: calibrated band levels against the listener's thresholds,
precomputed features, training on them, and a checkpoint round trip (tiny models)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmark.errors import BenchError
from haaqinet.checkpoint import load_checkpoint, save_checkpoint
from haaqinet.frontends import AuditoryFrontend, calibrate_to_spl, create_frontend
from haaqinet.model import HAAQINet
from haaqinet.train import TrainConfig, fit, precompute_features, predict_features

SR = 16000
TINY_FE = dict(n_bands=16, dim=16, n_layers=2, n_heads=2, ffn_dim=32, stride=4)
TINY_HEAD = dict(adapter_dim=8, lstm_hidden=4, attention_dim=8, attention_heads=2)
FLAT_40 = torch.full((1, 8), 40.0)


def _signal(n_samples: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / SR
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.15 * np.sin(2 * np.pi * 3000 * t) + 0.02 * rng.standard_normal(n_samples)
    return torch.tensor(x, dtype=torch.float32).unsqueeze(0)


def _tiny(seed: int = 0) -> HAAQINet:
    torch.manual_seed(seed)
    return HAAQINet(frontend="auditory", frontend_args=TINY_FE, **TINY_HEAD).eval()


def test_shapes_and_frame_count():
    fe = create_frontend("auditory", **TINY_FE).eval()
    x = torch.cat([_signal(8000, 0), _signal(8000, 1)])
    with torch.no_grad():
        hidden = fe(calibrate_to_spl(x, torch.tensor([60.0, 70.0])), FLAT_40.expand(2, 8))
    assert len(hidden) == fe.n_layers == 2
    assert fe.n_frames(8000) == 7 and fe.frames_per_second == 12.5
    assert all(h.shape == (2, 7, 16) for h in hidden)


def test_band_levels_are_calibrated_db_spl():
    """A 1-kHz tone at 70 dB SPL: the band powers add up to 70 dB SPL; +6 dB moves every
    audible level and sensation-level cell by 6 dB; the sensation map is level minus threshold."""
    fe = AuditoryFrontend(n_bands=32)
    tone = torch.sin(2 * math.pi * 1000 * torch.arange(SR) / SR).unsqueeze(0)
    feats = fe.precompute(calibrate_to_spl(tone, torch.tensor([70.0])), FLAT_40)[0]  # (T, 4 * 32)
    level = feats[:, :32] * 20 + 50  # dB SPL
    total = 10 * torch.log10((10 ** (level[10] / 10)).sum())
    assert float(total) == pytest.approx(70.0, abs=0.5)
    loud = fe.precompute(calibrate_to_spl(tone, torch.tensor([76.0])), FLAT_40)[0]
    audible = level[10] > 20
    torch.testing.assert_close((loud - feats)[10, :32][audible] * 20, torch.full((int(audible.sum()),), 6.0),
                               atol=1e-3, rtol=0)
    thr = fe.thresholds_db_spl(FLAT_40)[0]
    assert float(thr.min()) > 30 and float(thr.max()) < 55  # 40 dB HL + RETSPL
    sl = feats[10, 32:64] * 20
    torch.testing.assert_close(sl[audible], (level[10] - thr)[audible].clamp(min=-30), atol=1e-3, rtol=0)
    torch.testing.assert_close(feats[10, 64:96] * 30 + 40, thr, atol=1e-3, rtol=0)


def test_a_worse_audiogram_lowers_the_sensation_level_only():
    fe = AuditoryFrontend(n_bands=16)
    x = calibrate_to_spl(_signal(8000), torch.tensor([65.0]))
    mild, severe = fe.precompute(x, FLAT_40), fe.precompute(x, FLAT_40 + 30)
    assert torch.equal(mild[..., :16], severe[..., :16]) and torch.equal(mild[..., 48:], severe[..., 48:])
    assert bool((severe[..., 16:32] <= mild[..., 16:32]).all()) and float((mild - severe)[..., 16:32].max()) > 1.4


def test_precomputed_features_give_the_same_scores():
    model = _tiny()
    x = torch.cat([_signal(16000, 0), _signal(16000, 1)])
    a = torch.tensor([[10, 20, 30, 40, 50, 60, 60, 60.0], [40.0] * 8])
    s = torch.tensor([55.0, 80.0])
    with torch.no_grad():
        clip, frames = model(x, a, s)
        clip2, frames2 = model(None, a, s, features=model.precompute(x, a, s))
    torch.testing.assert_close(clip, clip2)
    assert frames.shape == (2, model.frontend.n_frames(16000))
    feats = precompute_features(model, x.numpy(), a.numpy(), s.numpy(), batch_size=1)
    assert feats.dtype == np.float16
    np.testing.assert_allclose(predict_features(model, feats, a.numpy(), s.numpy()), clip.numpy(), atol=2e-3)


def test_regression_value():
    model = _tiny()
    a, s = torch.tensor([[10, 20, 30, 40, 50, 60, 60, 60.0]]), torch.tensor([65.0])
    with torch.no_grad():
        feats = model.precompute(_signal(16000), a, s)
        hidden = model.frontend.forward_features(feats)
        clip, _ = model(_signal(16000), a, s)
    assert float(feats.mean()) == pytest.approx(REGRESSION["features_mean"], abs=1e-4)
    assert float(feats[0, 5, :16].sum()) == pytest.approx(REGRESSION["level_frame5_sum"], abs=1e-3)
    assert float(hidden[-1].mean()) == pytest.approx(REGRESSION["last_mean"], abs=1e-4)
    assert float(clip) == pytest.approx(REGRESSION["clip"], abs=1e-4)


def test_fit_on_features_and_round_trip(tmp_path):
    model = _tiny()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16000)).astype(np.float32) * 0.1
    a = rng.uniform(0, 80, (4, 8)).astype(np.float32)
    s = rng.uniform(45, 85, 4).astype(np.float32)
    y = rng.uniform(0, 1, 4).astype(np.float32)
    feats = precompute_features(model, x, a, s)
    hist = fit(model.train(), (feats, a, s, y), (feats, a, s, y),
               TrainConfig(frontend="auditory", epochs=2, batch_size=4, warmup_steps=1, crop_s_min=0.5,
                           high_weight=2.0), log=lambda m: None)
    assert len(hist["epochs"]) == 2
    path = save_checkpoint(tmp_path / "aud.pt", model.eval())
    loaded = load_checkpoint(path)
    assert loaded.model_args == model.model_args
    with torch.no_grad():
        torch.testing.assert_close(loaded(torch.tensor(x[:2]), torch.tensor(a[:2]), torch.tensor(s[:2]))[0],
                                   model(torch.tensor(x[:2]), torch.tensor(a[:2]), torch.tensor(s[:2]))[0])


REGRESSION = {"features_mean": -0.371549, "level_frame5_sum": -10.52861, "last_mean": -0.0087603,
              "clip": 0.5154333}


def test_fit_keeps_the_weight_average_when_asked():
    """With ``ema`` the model ends with the averaged weights of its best epoch, not the raw ones."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 16000)).astype(np.float32) * 0.1
    a = rng.uniform(0, 80, (8, 8)).astype(np.float32)
    s = rng.uniform(45, 85, 8).astype(np.float32)
    y = rng.uniform(0, 1, 8).astype(np.float32)
    finals = {}
    for decay in (0.0, 0.5):
        torch.manual_seed(0)
        model = _tiny()
        feats = precompute_features(model, x, a, s)
        start = {k: v.clone() for k, v in model.state_dict().items()}
        fit(model.train(), (feats, a, s, y), (feats, a, s, y),
            TrainConfig(frontend="auditory", epochs=3, batch_size=4, warmup_steps=1, ema=decay, patience=10),
            log=lambda m: None)
        finals[decay] = model.state_dict()
        assert any(not torch.equal(start[k], v) for k, v in finals[decay].items())
    assert any(not torch.equal(finals[0.0][k], finals[0.5][k]) for k in finals[0.0])


def test_weight_average_rejects_a_bad_decay():
    from haaqinet.train import weight_average

    assert weight_average(_tiny(), 0.0) is None
    with pytest.raises(BenchError, match="decay"):
        weight_average(_tiny(), 1.5)


def test_haaqi_level_map_is_haaqis_compression_and_attenuation():
    """The fifth map equals what the fast HAAQI's own kernels make of a steady band level: the
    outer-hair-cell gain (compression_gain) and the conversion to dB SL (ihc_db)."""
    from benchmark.haaqi.fast import filters
    from benchmark.haaqi.fast.ear_model import cochlea
    from haaqinet.frontends import haaqi_sensation_db

    fe = AuditoryFrontend(n_bands=24, haaqi_level=True)
    audiogram = torch.tensor([[10, 20, 35, 50, 60, 65, 75, 80.0]])
    levels = torch.tensor([-10.0, 0.0, 20.0, 40.0, 55.0, 70.0, 85.0, 100.0, 110.0])
    grid = levels[None, :, None].expand(1, levels.numel(), 24)
    got = haaqi_sensation_db(grid, audiogram, fe._centre_hz)[0]          # (levels, bands)
    ear = cochlea(audiogram[0, [0, 1, 2, 3, 5, 6]].double().numpy(), centre_hz=fe._centre_hz)
    level1 = 100.0
    for j, L in enumerate(levels.tolist()):
        for k in range(24):
            env = np.full(filters.GAIN_BLOCK, 10 ** ((L - level1) / 20))
            gain = env.copy()
            filters.compression_gain(gain, np.array([env.max()]),
                                     np.array([level1, ear.attn_ohc_db[k], ear.low_knee_db[k], ear.ratio[k]]))
            out = np.empty(filters.GAIN_BLOCK)
            filters.ihc_db(env * gain, 0, level1, ear.attn_ihc_db[k], out)
            assert float(got[j, k]) == pytest.approx(out[0], abs=1e-3), (L, k)
    assert float(got[0].max()) == 0.0 and float(got[-1].min()) > 0.0   # inaudible at -10 dB, audible at 110


def test_haaqi_level_map_in_the_features():
    fe = AuditoryFrontend(n_bands=16, haaqi_level=True)
    x = calibrate_to_spl(_signal(8000), torch.tensor([65.0]))
    mild, severe = fe.precompute(x, FLAT_40), fe.precompute(x, FLAT_40 + 30)
    assert mild.shape[-1] == 5 * 16 and fe.n_maps == 5
    assert torch.equal(mild[..., :16], severe[..., :16])            # the level map does not see the ear
    assert bool((severe[..., 64:] <= mild[..., 64:]).all()) and float((mild - severe)[..., 64:].max()) > 0.5
    assert torch.equal(AuditoryFrontend(n_bands=16).precompute(x, FLAT_40), mild[..., :64])   # the four maps as before
    model = HAAQINet(frontend="auditory", frontend_args=dict(TINY_FE, haaqi_level=True), **TINY_HEAD).eval()
    with torch.no_grad():
        clip, _ = model(_signal(16000), FLAT_40, torch.tensor([65.0]))
    assert 0.0 < float(clip) < 1.0
    with pytest.raises(BenchError, match="haaqi_level"):
        AuditoryFrontend(f_min_hz=300.0, haaqi_level=True)
