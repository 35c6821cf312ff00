"""Ensembles: the mean of their members, a checkpoint round trip, the fast form, the CLI and the refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from benchmark.errors import BenchError
from haaqinet.checkpoint import load_checkpoint, save_checkpoint
from haaqinet.cli import app
from haaqinet.ensemble import HAAQINetEnsemble, require_network
from haaqinet.fast import inference_model
from haaqinet.model import HAAQINet

from .conftest import TINY_TEACHER


def _net(seed: int, **frontend) -> HAAQINet:
    torch.manual_seed(seed)
    args = json.loads(json.dumps(TINY_TEACHER))
    args["frontend_args"].update(frontend)
    return HAAQINet(**args).eval()


def _batch(n=3, seconds=1.0):
    rng = np.random.default_rng(0)
    x = torch.as_tensor(0.1 * rng.standard_normal((n, int(16000 * seconds))), dtype=torch.float32)
    a = torch.as_tensor([[10, 20, 30, 40, 50, 60, 60, 60]] * n, dtype=torch.float32)
    s = torch.as_tensor([55.0, 65.0, 75.0][:n], dtype=torch.float32)
    return x, a, s


def test_an_ensemble_scores_the_mean_of_its_members_and_round_trips(tmp_path):
    nets = [_net(0), _net(1), _net(2, haaqi_level=True)]
    ens = HAAQINetEnsemble.of(nets)
    x, a, s = _batch()
    with torch.inference_mode():
        clip, frames = ens(x, a, s)
        outs = [n(x, a, s) for n in nets]
    assert torch.allclose(clip, torch.stack([c for c, _ in outs]).mean(0), atol=1e-7)
    assert torch.allclose(frames, torch.stack([f for _, f in outs]).mean(0), atol=1e-7)
    assert not torch.allclose(outs[0][0], outs[1][0])            # the members differ, so the mean is a mean
    path = save_checkpoint(tmp_path / "ens.pt", ens)
    again = load_checkpoint(path)
    assert isinstance(again, HAAQINetEnsemble) and len(again.members) == 3
    with torch.inference_mode():
        assert torch.equal(again(x, a, s)[0], clip)
        fast_clip, _ = inference_model(again)(x, a, s)            # the mean of the members' fast forms
    assert torch.allclose(fast_clip, clip, atol=1e-5)
    assert inference_model(nets[2]) is nets[2]        # the fast form has no haaqi_level map: the network itself


def test_ensembles_refuse_what_they_cannot_be(tmp_path):
    with pytest.raises(BenchError, match="at least 2"):
        HAAQINetEnsemble([_net(0).model_args])
    ens = HAAQINetEnsemble.of([_net(0), _net(1)])
    with pytest.raises(BenchError, match="ensemble of 2 networks; distillation needs one network"):
        require_network(ens, "distillation")
    assert require_network(_net(0), "distillation") is not None
    with pytest.raises(BenchError, match="an ensemble member needs one network"):
        HAAQINetEnsemble.of([ens, _net(2)])
    with pytest.raises(BenchError, match="one rate"):
        HAAQINetEnsemble([_net(0).model_args, _net(1, stride=4).model_args])


def test_ensemble_command_writes_an_evaluated_checkpoint_that_predicts(toy_teacher, tmp_path):
    folder, ckpt = toy_teacher
    other = tmp_path / "other.pt"
    save_checkpoint(other, _net(5))
    out = tmp_path / "ens.pt"
    res = CliRunner().invoke(app, ["ensemble", "--checkpoint", str(ckpt), "--checkpoint", str(other),
                                   "--out", str(out), "--data", str(folder)])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "| test |" in res.output
    sidecar = json.loads(out.with_name("ens.pt.json").read_text())
    assert [m["file"] for m in sidecar["extra"]["members"]] == ["teacher.pt", "other.pt"]
    assert set(sidecar["metrics"]["per_split"]) >= {"val", "test"}
    # distillation, a warm start and fine-tuning take one network
    from haaqinet.train import TrainConfig, initial_model
    with pytest.raises(BenchError, match="ens.pt is an ensemble of 2 networks; --init needs one network"):
        initial_model(TrainConfig(init=str(out)))
    res = CliRunner().invoke(app, ["ensemble", "--checkpoint", str(ckpt), "--out", str(out)])
    assert res.exit_code == 2 and "exists" in res.output


def test_the_shipped_ensemble_is_the_default_and_the_mean_of_the_teacher_and_three_other_networks():
    from haaqinet.predict import DEFAULT_CHECKPOINT, ENSEMBLE_CHECKPOINT, TEACHER_CHECKPOINT, resolve_checkpoint

    assert resolve_checkpoint("ensemble") == resolve_checkpoint(None) == DEFAULT_CHECKPOINT == ENSEMBLE_CHECKPOINT
    ens = load_checkpoint(ENSEMBLE_CHECKPOINT)
    assert isinstance(ens, HAAQINetEnsemble) and len(ens.members) == 4 and ens.input_level
    weights = [torch.cat([p.flatten() for p in m.parameters()]) for m in ens.members]
    assert all(not torch.equal(weights[0], w) for w in weights[1:])
    assert [m.frontend.level_channels for m in ens.members] == [False, False, False, True]
    teacher = load_checkpoint(TEACHER_CHECKPOINT)
    assert torch.equal(weights[0], torch.cat([p.flatten() for p in teacher.parameters()]))   # member 0: the teacher
    sidecar = json.loads(ENSEMBLE_CHECKPOINT.with_name(ENSEMBLE_CHECKPOINT.name + ".json").read_text())
    members = sidecar["extra"]["members"]
    assert len(members) == 4 and len({m["sha256_12"] for m in members}) == 4
    assert ENSEMBLE_CHECKPOINT.stat().st_size <= 20 * 1024 * 1024     # the limit for a shipped checkpoint
    assert sidecar["metrics"]["per_split"]["test"]["n"] == 2364
