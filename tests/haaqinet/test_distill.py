"""Distillation: the loss, the configurable student pieces, checkpoint names, and the CLI end to end on toy data."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from typer.testing import CliRunner

from benchmark.errors import BenchError
from haaqinet.cli import app
from haaqinet.distill import STUDENT_ARGS, distill_loss, model_flops, pool_time
from haaqinet.model import HAAQINet, count_parameters

TINY_STUDENT = ["--student-frontend-arg", "dim=8", "--student-frontend-arg", "n_layers=1",
                "--student-frontend-arg", "n_heads=2", "--student-frontend-arg", "ffn_dim=8",
                "--student-frontend-arg", "n_bands=12", "--student-arg", "adapter_dim=4",
                "--student-arg", "lstm_hidden=2", "--student-arg", "attention_dim=4",
                "--student-arg", "attention_heads=2", "--student-arg", "rnn=\"none\""]


def test_loss_pools_frame_rates_and_mixes_label_and_teacher():
    s_clip, label, t_clip = torch.tensor([0.5, 0.2]), torch.tensor([0.4, 0.4]), torch.tensor([0.6, 0.1])
    s_frames = torch.tensor([[0.1, 0.3, 0.5, 0.7], [0.2, 0.2, 0.2, 0.2]])  # 4 frames
    t_frames = torch.tensor([[0.2, 0.6], [0.0, 0.4]])  # 2 frames: the student's are averaged in pairs
    pooled = torch.tensor([[0.2, 0.6], [0.2, 0.2]])
    assert torch.allclose(pool_time(s_frames, 2), pooled)
    loss, parts = distill_loss(s_clip, s_frames, t_clip, t_frames, label, alpha=0.25, frame_weight=2.0)
    clip = 0.25 * ((s_clip - label) ** 2).mean() + 0.75 * ((s_clip - t_clip) ** 2).mean()
    frame = 0.25 * ((pooled - label[:, None]) ** 2).mean() + 0.75 * ((pooled - t_frames) ** 2).mean()
    assert float(loss) == pytest.approx(float(clip + 2.0 * frame), abs=1e-7)
    assert parts["frame"] == pytest.approx(float(frame), abs=1e-7)
    # a student equal to the teacher and alpha = 0: nothing to learn
    zero, _ = distill_loss(t_clip, t_frames, t_clip, t_frames, label, alpha=0.0)
    assert float(zero) == 0.0
    # the hint term compares pooled hidden states
    h_s, h_t = torch.ones(2, 4, 3), torch.zeros(2, 2, 3)
    hinted, parts = distill_loss(t_clip, t_frames, t_clip, t_frames, label, alpha=0.0, s_hidden=h_s, t_hidden=h_t,
                                 hint_weight=0.5)
    assert float(hinted) == pytest.approx(0.5) and parts["hint"] == pytest.approx(1.0)


def test_student_pieces_are_configurable_without_changing_the_default():
    default = HAAQINet(frontend="auditory")
    assert "rnn" not in default.model_args and default.blstm is not None
    assert default.frontend.N_FFT == 512 and default.frontend.HOP == 320
    student = HAAQINet(**STUDENT_ARGS)
    assert HAAQINet(**student.model_args).model_args == student.model_args
    fe = student.frontend
    assert (fe.N_FFT, fe.HOP, fe.n_bands) == (512, 1280, 24) and student.blstm is None
    x, a, s = 0.05 * torch.randn(2, 16000), torch.full((2, 8), 30.0), torch.tensor([60.0, 70.0])
    clip, frames = student(x, a, s)
    assert clip.shape == (2,) and frames.shape == (2, fe.n_frames(16000))
    assert count_parameters(student) <= 0.25 * count_parameters(default)
    assert student.model_args["rnn"] == "none"
    assert student(x, a, s, torch.tensor([16000, 12000]))[0].shape == (2,)
    recurrent = HAAQINet(**{**STUDENT_ARGS, "rnn": "lstm"})
    assert recurrent.blstm is not None and "rnn" not in recurrent.model_args
    with pytest.raises(BenchError, match="rnn"):
        HAAQINet(frontend="auditory", rnn="gru")
    with pytest.raises(BenchError, match="n_fft"):
        HAAQINet(frontend="auditory", frontend_args={"n_fft": 63})


def test_flops_count_the_lstm_and_the_fft():
    teacher, student = HAAQINet(frontend="auditory").eval(), HAAQINet(**STUDENT_ARGS).eval()
    ft, fs = model_flops(teacher, 2.0), model_flops(student, 2.0)
    assert ft["lstm"] > 0 and ft["fft"] > 0 and ft["total"] == ft["counted"] + ft["lstm"] + ft["fft"]
    assert fs["total"] < 0.25 * ft["total"]


def test_checkpoint_names_resolve(tmp_path, monkeypatch):
    from haaqinet.predict import (DEFAULT_CHECKPOINT, ENSEMBLE_CHECKPOINT, STUDENT_CHECKPOINT, TEACHER_CHECKPOINT,
                                  resolve_checkpoint)

    assert resolve_checkpoint(None) == DEFAULT_CHECKPOINT == resolve_checkpoint("default")
    assert resolve_checkpoint("teacher") == TEACHER_CHECKPOINT != DEFAULT_CHECKPOINT
    assert resolve_checkpoint("ensemble") == ENSEMBLE_CHECKPOINT == DEFAULT_CHECKPOINT
    assert resolve_checkpoint("student") == STUDENT_CHECKPOINT
    assert resolve_checkpoint(tmp_path / "student") == tmp_path / "student"  # a path stays a path
    monkeypatch.chdir(tmp_path)
    (tmp_path / "student").write_bytes(b"x")  # an existing file wins over the name
    assert resolve_checkpoint("student").resolve() == (tmp_path / "student").resolve()
    assert resolve_checkpoint(tmp_path / "other.pt") == tmp_path / "other.pt"
    from benchmark.cli import _checkpoint_spec

    assert _checkpoint_spec("student") == "student" and _checkpoint_spec(None) == "default"
    assert _checkpoint_spec("x.pt") == str(tmp_path / "x.pt")


def test_distill_end_to_end_on_toy_data(toy_teacher, tmp_path):
    from haaqinet.predict import Predictor

    folder, teacher = toy_teacher
    out = tmp_path / "student.pt"
    res = CliRunner().invoke(app, ["distill", "--data", str(folder), "--teacher", str(teacher), "--out", str(out),
                                   "--epochs", "2", "--batch-size", "8", "--hint-weight", "0.1", *TINY_STUDENT])
    assert res.exit_code == 0, res.output
    assert "teacher LCC" in res.output and "fewer" in res.output
    side = json.loads((tmp_path / "student.pt.json").read_text())
    m = side["metrics"]
    assert {"test", "train"} <= set(m["per_split"]) and set(m["teacher"]["per_split"]) == set(m["per_split"])
    for split, d in m["lcc_drop"].items():
        assert d["lcc_drop"] == pytest.approx(m["teacher"]["per_split"][split]["lcc"] - m["per_split"][split]["lcc"],
                                              nan_ok=True)
    size = m["size"]
    assert size["student_parameters"] < size["teacher_parameters"]
    assert size["student_flops_10s"]["total"] < size["teacher_flops_10s"]["total"]
    assert side["extra"]["teacher"]["sha256"] == hashlib.sha256(teacher.read_bytes()).hexdigest()
    assert side["extra"]["distillation"]["hint_weight"] == 0.1 and len(m["history"]["epochs"]) >= 1
    assert side["model_args"]["rnn"] == "none" and side["model_args"]["frontend_args"]["hop"] == 1280
    # teacher outputs and student features were cached: a second run reuses them
    assert list((folder / "cache" / "distill").glob("teacher-*.npz"))
    scores = Predictor(out).predict_signals([0.05 * torch.randn(16000).numpy()], ["N3"], [65.0])
    assert 0 < scores[0] < 1


def test_distill_from_an_ensemble_uses_its_mean_and_no_hint(toy_teacher, tmp_path):
    import numpy as np

    from haaqinet.ensemble import build

    folder, teacher = toy_teacher
    pair = tmp_path / "pair.pt"
    build([teacher, teacher], pair, log=lambda *_: None)     # the mean of two copies: the teacher's own outputs
    runs = {}
    for name, path in (("single", teacher), ("pair", pair)):
        out = tmp_path / f"student-{name}.pt"
        res = CliRunner().invoke(app, ["distill", "--data", str(folder), "--teacher", str(path), "--out", str(out),
                                       "--epochs", "1", "--batch-size", "8", *TINY_STUDENT])
        assert res.exit_code == 0, res.output
        runs[name] = (res.output, json.loads(out.with_name(out.name + ".json").read_text()))
    output, side = runs["pair"]
    assert "ensemble of 2 networks" in output and "hint term is off" in output
    assert side["extra"]["distillation"]["hint_weight"] == 0.0
    assert runs["single"][1]["extra"]["distillation"]["hint_weight"] == 0.1
    single_flops = runs["single"][1]["metrics"]["size"]["teacher_flops_10s"]["total"]
    assert side["metrics"]["size"]["teacher_flops_10s"]["total"] == 2 * single_flops
    cache = folder / "cache" / "distill"
    sha = {n: hashlib.sha256(p.read_bytes()).hexdigest()[:12] for n, p in (("single", teacher), ("pair", pair))}
    for split in ("train", "val"):
        single, = cache.glob(f"teacher-{sha['single']}-{split}-*.npz")
        pair_file, = cache.glob(f"teacher-{sha['pair']}-{split}-*.npz")
        with np.load(single) as a, np.load(pair_file) as b:
            assert "t_hidden" in a.files and "t_hidden" not in b.files
            for key in ("t_clip", "t_frames"):
                assert np.array_equal(a[key], b[key]), key


def test_distill_errors(toy_teacher, tmp_path):
    folder, _ = toy_teacher
    runner = CliRunner()
    res = runner.invoke(app, ["distill", "--data", str(folder), "--teacher", str(tmp_path / "none.pt")])
    assert res.exit_code == 2 and "not found" in res.output
    res = runner.invoke(app, ["distill", "--data", str(folder), "--alpha", "1.5"])
    assert res.exit_code == 2 and "alpha" in res.output


def test_the_shipped_student():
    from haaqinet.predict import STUDENT_CHECKPOINT, TEACHER_CHECKPOINT, Predictor

    if not STUDENT_CHECKPOINT.is_file():
        pytest.skip("no shipped student in this checkout")
    assert STUDENT_CHECKPOINT.stat().st_size <= 2 * 1024 * 1024
    side = json.loads(STUDENT_CHECKPOINT.with_name(STUDENT_CHECKPOINT.name + ".json").read_text())
    m = side["metrics"]
    assert {"test", "unseen-conditions", "val"} <= set(m["per_split"]) and "lcc_drop" in m
    assert m["size"]["parameter_reduction"] >= 0.75
    student = Predictor("student")
    assert student.checkpoint == STUDENT_CHECKPOINT
    if TEACHER_CHECKPOINT.is_file():
        teacher = Predictor("teacher").model
        assert count_parameters(student.model) <= 0.25 * count_parameters(teacher)
    score = student.predict_signals([0.05 * torch.randn(32000).numpy()], ["N3"], [65.0])
    assert 0 < score[0] < 1
