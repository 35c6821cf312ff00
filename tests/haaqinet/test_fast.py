"""The fast CPU inference path (haaqinet.fast): the module's scores, for the shipped teacher and student and
for small models of other shapes; what it leaves to the module; its elementary functions."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.errors import BenchError
from haaqinet.distill import STUDENT_ARGS
from haaqinet.fast import FastHAAQINet, inference_model, supports
from haaqinet.model import HAAQINet
from haaqinet.predict import _audiogram

SR = 16000
TOL = 1e-5  # scores lie in (0, 1): float32 rounding, far below any difference between models


def _music(n: int, seed: int) -> torch.Tensor:
    """Four partials with a tremolo and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    x = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate(rng.uniform(100, 3000, 4), 1))
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t)) + 0.01 * rng.standard_normal(n)
    return torch.tensor(0.1 * x, dtype=torch.float32)


def _inputs(n: int):
    x = torch.stack([_music(n, i) for i in range(3)])
    a = torch.tensor([[10, 20, 30, 40, 50, 60, 60, 60.0], [40.0] * 8, [0.0] * 8])
    return x, a, torch.tensor([55.0, 80.0, 65.0])


def _assert_same(model: HAAQINet, fast: FastHAAQINet, x, a, s):
    with torch.inference_mode():
        clip, frames = model(x, a, s)
        fast_clip, fast_frames = fast(x, a, s)
    assert fast_clip.shape == clip.shape and fast_frames.shape == frames.shape
    np.testing.assert_allclose(fast_clip.numpy(), clip.numpy(), atol=TOL, rtol=0)
    np.testing.assert_allclose(fast_frames.numpy(), frames.numpy(), atol=TOL, rtol=0)


@pytest.mark.parametrize("name", ["student", "teacher"])
def test_the_shipped_models_give_the_same_scores(name):
    from haaqinet.predict import CHECKPOINT_NAMES, Predictor

    if not CHECKPOINT_NAMES[name].is_file():
        pytest.skip(f"no shipped {name} in this checkout")
    predictor = Predictor(name)
    fast = predictor.runner
    assert isinstance(fast, FastHAAQINet) and fast.fused == (name == "student")  # the student runs in one kernel
    for n in (10 * SR, 12345, 3000):  # 10 s, a clip with partial frames at both ends, 0.19 s
        _assert_same(predictor.model, fast, *_inputs(n))
    silent = torch.zeros(1, SR)
    _assert_same(predictor.model, fast, silent, torch.full((1, 8), 30.0), torch.tensor([70.0]))
    x, _, s = _inputs(2 * SR)
    names = ["N1", "N3", "NH"]
    scores = predictor.predict_signals(list(x.numpy()), names, s.numpy())  # through the fast form
    with torch.inference_mode():
        expected = predictor.model(x, torch.stack([torch.as_tensor(_audiogram(g)) for g in names]), s)[0]
    np.testing.assert_allclose(scores, expected.numpy(), atol=TOL, rtol=0)


def _random(args: dict, seed: int = 0) -> HAAQINet:
    """A model of this shape with every weight random (layer norms and layer weights too)."""
    torch.manual_seed(seed)
    model = HAAQINet(**args).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def _student(frontend: dict | None = None, **head) -> dict:
    args = copy.deepcopy(STUDENT_ARGS)
    args["frontend_args"].update(frontend or {})
    return {**args, **head}


@pytest.mark.parametrize("args", [
    _student(),
    _student({"stride": 8, "n_bands": 16, "n_fft": 256, "hop": 160}, use_spl=False),
    _student({"stride": 1}),
    _student({"n_layers": 2}),  # a transformer layer: torch between the kernels
    _student(rnn="lstm"),
    {"frontend": "auditory", "frontend_args": {"n_bands": 12, "dim": 16, "n_layers": 2, "n_heads": 2, "ffn_dim": 32,
                                               "stride": 4}, "adapter_dim": 8, "lstm_hidden": 4, "attention_dim": 8,
     "attention_heads": 2},
], ids=["student", "stride-8-no-spl", "stride-1", "transformer", "lstm", "tiny-teacher"])
def test_small_models_of_other_shapes_give_the_same_scores(args):
    model = _random(args)
    fast = FastHAAQINet(model)
    assert fast.fused == (args.get("rnn") == "none" and args["frontend_args"].get("n_layers", 2) == 1)
    for n in (SR, 6001):
        _assert_same(model, fast, *_inputs(n))


def test_masks_errors_and_other_models_go_to_the_module():
    model = _random(STUDENT_ARGS)
    fast = inference_model(model)
    assert isinstance(fast, FastHAAQINet) and fast.model is model
    x, a, s = _inputs(SR)
    n = torch.tensor([SR, 12000, 8000])
    with torch.inference_mode():
        torch.testing.assert_close(fast(x, a, s, n), model(x, a, s, n))
        with pytest.raises(BenchError, match="audiogram_db_hl"):
            fast(x, a[:, :4], s)
    mel = HAAQINet(frontend="mel", frontend_args={"dim": 16, "n_layers": 1, "n_heads": 2}, adapter_dim=8,
                   lstm_hidden=4, attention_dim=8, attention_heads=2)
    assert not supports(mel) and inference_model(mel) is mel
    assert not supports(model.double())


def test_the_vectorised_functions_are_as_accurate_as_float32_libraries():
    from haaqinet.fast_fused import _exp_inplace, _gelu_inplace
    from haaqinet.fast_kernels import _log_inplace

    rng = np.random.default_rng(0)

    def ulps(got, exact):
        return np.abs(got - exact) / np.spacing(np.abs(exact).astype(np.float32))

    x = np.exp(rng.uniform(-35, 20, 100_000)).astype(np.float32)  # powers from 1e-15 up
    log = x.copy()
    _log_inplace(log)
    assert ulps(log, np.log(x.astype(np.float64))).max() <= 3
    x = rng.uniform(-87, 0, 100_000).astype(np.float32)
    exp = x.copy()
    _exp_inplace(exp)
    assert ulps(exp, np.exp(x.astype(np.float64))).max() <= 2
    x = np.concatenate([rng.normal(0, 3, 100_000), np.linspace(-15, 15, 3001)]).astype(np.float32)
    gelu = x.copy()
    _gelu_inplace(gelu)
    exact = F.gelu(torch.from_numpy(x).double()).numpy()
    assert np.abs(gelu - exact).max() <= 5e-7  # torch's own float32 GELU: 4e-7
    assert ulps(gelu, exact)[np.abs(exact) > 1e-3].max() <= 32


def test_a_model_with_a_score_map_gives_the_same_scores():
    model = _random(STUDENT_ARGS)
    model.add_score_map()
    with torch.no_grad():
        model.score_map.slope_raw.fill_(1.3)
        model.score_map.shift.fill_(-0.4)
        model.score_map.lo.fill_(0.1)
    _assert_same(model, FastHAAQINet(model), *_inputs(SR))
