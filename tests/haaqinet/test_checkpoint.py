"""Checkpoints: round trips (mel stored in full, beats head-only) and clear errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from benchmark.errors import BenchError
from haaqinet.beats import BEATs, BEATsConfig, save_beats_checkpoint
from haaqinet.checkpoint import load_checkpoint, save_checkpoint
from haaqinet.model import HAAQINet

TINY_HEAD = dict(adapter_dim=16, lstm_hidden=8, attention_dim=16, attention_heads=4)
TINY_MEL = dict(frontend="mel", frontend_args=dict(dim=32, n_layers=2, n_heads=2, ffn_dim=64), **TINY_HEAD)
TINY_BEATS_CFG = dict(embed_dim=16, encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
                      encoder_attention_heads=4, conv_pos=16, conv_pos_groups=4, num_buckets=32, max_distance=64)


def _inputs():
    rng = np.random.default_rng(0)
    return (torch.tensor(0.1 * rng.standard_normal((2, 8000)), dtype=torch.float32),
            torch.tensor([[10, 10, 20, 30, 40, 50, 60, 60], [0] * 8], dtype=torch.float32),
            torch.tensor([65.0, 70.0]))


def _outputs(model):
    with torch.no_grad():
        return model.eval()(*_inputs())


def _beats_file(path, seed=0):
    torch.manual_seed(seed)
    save_beats_checkpoint(path, BEATs(BEATsConfig(**TINY_BEATS_CFG)))
    return path


def _beats_model(encoder_path):
    torch.manual_seed(0)
    return HAAQINet(frontend="beats", frontend_args={"checkpoint_path": str(encoder_path)}, **TINY_HEAD)


def test_mel_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    model = HAAQINet(**TINY_MEL)
    path = save_checkpoint(tmp_path / "ckpt" / "mel.pt", model, metrics={"val_mse": 0.01}, extra={"note": "t"})
    package = torch.load(path, weights_only=True)
    assert {"model_name", "model_args", "state_dict", "versions", "created"} <= set(package)
    assert package["model_name"] == "HAAQINet" and package["frontend_reference"] is None
    assert any(k.startswith("frontend.") for k in package["state_dict"])
    assert set(package["versions"]) == {"torch", "numpy", "haaqi-bench"}
    sidecar = json.loads((tmp_path / "ckpt" / "mel.pt.json").read_text())
    assert sidecar["model_args"] == model.model_args and sidecar["metrics"] == {"val_mse": 0.01}
    assert sidecar["frontend_weights_stored"] and "git_commit" in sidecar
    loaded = load_checkpoint(path)
    assert loaded.model_args == model.model_args and not loaded.training
    for a, b in zip(_outputs(model), _outputs(loaded)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_frozen_beats_stores_only_the_head(tmp_path):
    encoder = _beats_file(tmp_path / "beats.pt")
    model = _beats_model(encoder)
    path = save_checkpoint(tmp_path / "head.pt", model)
    package = torch.load(path, weights_only=True)
    assert not any(k.startswith("frontend.") for k in package["state_dict"])
    assert package["frontend_reference"]["path"] == str(encoder.resolve())
    expected = _outputs(model)
    for a, b in zip(expected, _outputs(load_checkpoint(path))):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    moved = tmp_path / "elsewhere" / "beats.pt"
    moved.parent.mkdir()
    shutil.move(encoder, moved)
    with pytest.raises(BenchError, match="pass frontend_path"):
        load_checkpoint(path)
    loaded = load_checkpoint(path, frontend_path=moved)
    assert loaded.model_args["frontend_args"]["checkpoint_path"] == str(moved)
    torch.testing.assert_close(_outputs(loaded)[0], expected[0], rtol=0, atol=0)

    _beats_file(tmp_path / "other.pt", seed=1)
    with pytest.raises(BenchError, match="fingerprint differs"):
        load_checkpoint(path, frontend_path=tmp_path / "other.pt")


def test_load_errors(tmp_path):
    with pytest.raises(BenchError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_text("hello")
    with pytest.raises(BenchError, match="not a readable torch checkpoint"):
        load_checkpoint(junk)
    not_ours = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, not_ours)
    with pytest.raises(BenchError, match="not a HAAQI-Net checkpoint"):
        load_checkpoint(not_ours)


def test_incompatible_checkpoints(tmp_path):
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "mel.pt", HAAQINet(**TINY_MEL))
    package = torch.load(path, weights_only=True)

    package["model_args"]["lstm_hidden"] = 12  # weights no longer fit
    torch.save(package, path)
    with pytest.raises(BenchError, match="weights do not fit model_args"):
        load_checkpoint(path)

    package["model_args"]["lstm_hidden"] = 8
    package["model_args"]["n_blocks"] = 3  # an argument this version does not know
    torch.save(package, path)
    with pytest.raises(BenchError, match="model_args do not fit"):
        load_checkpoint(path)

    del package["model_args"]["n_blocks"]
    package["model_args"]["frontend"] = "mle"
    torch.save(package, path)
    with pytest.raises(BenchError, match="did you mean 'mel'"):
        load_checkpoint(path)

    package["model_args"]["frontend"] = "mel"
    package["state_dict"]["extra.weight"] = torch.zeros(1)
    torch.save(package, path)
    with pytest.raises(BenchError, match="unexpected"):
        load_checkpoint(path)
