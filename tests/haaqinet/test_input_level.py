"""The optional input of HAAQI-Net: the clean music's presentation level (``input_level=True``).

The model, its fast inference form, a checkpoint round trip, training with the level withheld for a share of
items, distillation, ``predict`` (option and manifest column) and ``bench run``'s trials, which give each ear's
clean-music level.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from benchmark.errors import BenchError
from haaqinet.cli import app
from haaqinet.distill import STUDENT_ARGS
from haaqinet.fast import FastHAAQINet
from haaqinet.model import HAAQINet, input_level_values
from haaqinet.train import withhold_input_levels

from .conftest import TINY_TEACHER
from .test_fast import _inputs, _random, _student

LEVELS = torch.tensor([50.0, math.nan, 85.0])


def test_values_encode_the_level_and_whether_it_is_known():
    v = input_level_values(LEVELS, 3)
    np.testing.assert_allclose(v.numpy(), [[-0.75, 1.0], [0.0, 0.0], [1.0, 1.0]])
    assert torch.equal(input_level_values(None, 2), torch.zeros(2, 2))
    with pytest.raises(BenchError, match=r"\(3,\)"):
        input_level_values(torch.tensor([60.0]), 3)
    with pytest.raises(BenchError, match="between 0 and 130"):
        input_level_values(torch.tensor([300.0]), 1)


LEVEL_CHANNELS = {**TINY_TEACHER, "input_level": True,
                  "frontend_args": {**TINY_TEACHER["frontend_args"], "level_channels": True}}


@pytest.mark.parametrize("args", [{**TINY_TEACHER, "input_level": True}, LEVEL_CHANNELS], ids=["stats", "channels"])
def test_the_level_changes_the_score_and_nan_means_unknown(args):
    model = _random(args)
    x, a, s = _inputs(16000)
    with torch.inference_mode():
        known, _ = model(x, a, s, input_spl_db=torch.tensor([50.0, 60.0, 85.0]))
        other, _ = model(x, a, s, input_spl_db=torch.tensor([80.0, 60.0, 45.0]))
        unknown, _ = model(x, a, s, input_spl_db=torch.full((3,), math.nan))
        none, _ = model(x, a, s)
    assert torch.equal(unknown, none)
    assert (known[[0, 2]] - other[[0, 2]]).abs().min() > 1e-4 and known[1] == other[1]
    plain = _random(TINY_TEACHER)   # a network without the input ignores it
    with torch.inference_mode():
        assert torch.equal(plain(x, a, s, input_spl_db=LEVELS)[0], plain(x, a, s)[0])
    with pytest.raises(BenchError, match="auditory front end"):
        HAAQINet(frontend="mel", input_level=True)


def test_level_channels_widen_the_stem_and_need_the_level_input():
    plain, channels = HAAQINet(**{**TINY_TEACHER, "input_level": True}), HAAQINet(**LEVEL_CHANNELS)
    assert channels.frontend.stem[0].in_channels == plain.frontend.stem[0].in_channels + 2
    assert HAAQINet(**channels.model_args).frontend.level_channels    # rebuilt from the checkpoint's arguments
    with pytest.raises(BenchError, match="level_channels needs clip inputs"):
        HAAQINet(**{**TINY_TEACHER, "frontend_args": {**TINY_TEACHER["frontend_args"], "level_channels": True}})


@pytest.mark.parametrize("args", [_student(input_level=True), {**TINY_TEACHER, "input_level": True},
                                  _student({"level_channels": True}, input_level=True), LEVEL_CHANNELS],
                         ids=["student", "teacher", "student-channels", "teacher-channels"])
def test_the_fast_path_gives_the_same_scores(args):
    model = _random(args)
    fast = FastHAAQINet(model)
    x, a, s = _inputs(16000)
    for levels in (LEVELS, None):
        with torch.inference_mode():
            want, want_frames = model(x, a, s, input_spl_db=levels)
            got, got_frames = fast(x, a, s, input_spl_db=levels)
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(got_frames.numpy(), want_frames.numpy(), atol=1e-5, rtol=0)


def test_withholding_is_seeded_and_keeps_the_rest():
    levels = np.linspace(45, 85, 4000, dtype=np.float32)
    a, b = withhold_input_levels(levels, 0.25, 0), withhold_input_levels(levels, 0.25, 0)
    np.testing.assert_array_equal(a, b)
    assert 0.22 < np.isnan(a).mean() < 0.28
    np.testing.assert_array_equal(a[~np.isnan(a)], levels[~np.isnan(a)])
    assert not np.isnan(withhold_input_levels(levels, 0.0, 0)).any()
    with pytest.raises(BenchError, match=r"\[0, 1\]"):
        withhold_input_levels(levels, 1.5, 0)


@pytest.fixture(scope="module")
def level_teacher(toy_teacher, tmp_path_factory):
    from haaqinet.train import TrainConfig, train

    folder, _ = toy_teacher
    ckpt = tmp_path_factory.mktemp("level") / "level.pt"
    cfg = TrainConfig(frontend="auditory", frontend_args=dict(TINY_TEACHER["frontend_args"]),
                      model_args={**{k: v for k, v in TINY_TEACHER.items() if k not in ("frontend", "frontend_args")},
                                  "input_level": True}, epochs=2, batch_size=4, warmup_steps=2)
    train(folder, ckpt, cfg, log=lambda *_: None)
    return folder, ckpt


def test_training_records_both_judgements(level_teacher):
    _, ckpt = level_teacher
    side = json.loads(ckpt.with_name(ckpt.name + ".json").read_text())
    assert side["model_args"]["input_level"] is True
    assert side["extra"]["training"]["withhold_input_level"] == 0.25
    assert set(side["metrics"]["input_level_withheld"]["per_split"]) == set(side["metrics"]["per_split"])


def test_the_student_of_a_level_teacher_takes_the_level(level_teacher, tmp_path):
    from haaqinet.checkpoint import load_checkpoint
    from haaqinet.distill import DistillConfig, distill

    folder, ckpt = level_teacher
    args = {**STUDENT_ARGS, "frontend_args": {**STUDENT_ARGS["frontend_args"], "dim": 8, "ffn_dim": 8,
                                               "n_bands": 12}, "adapter_dim": 4, "lstm_hidden": 2,
            "attention_dim": 4}
    cfg = DistillConfig(teacher=str(ckpt), student_args=args, epochs=1, batch_size=8, hint_weight=0.0)
    distill(folder, tmp_path / "student.pt", cfg, log=lambda *_: None)
    assert load_checkpoint(tmp_path / "student.pt").input_level


def test_predict_takes_the_level_as_an_option_and_a_manifest_column(level_teacher, toy_teacher, tmp_path):
    from haaqinet.predict import Predictor

    _, ckpt = level_teacher
    t = np.arange(32000) / 16000
    sf.write(tmp_path / "a.wav", 0.1 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(3 * t)), 16000)
    p = Predictor(ckpt)
    assert p.uses_input_level and not Predictor(toy_teacher[1]).uses_input_level
    score = {lv: p.predict_file(tmp_path / "a.wav", audiogram="N3", spl_db=70, input_spl_db=lv)[0]["haaqinet"]
             for lv in (None, 50.0, 80.0)}
    assert len(set(score.values())) == 3
    pd.DataFrame({"file": ["a.wav"] * 3, "audiogram": ["N3"] * 3, "spl_db": [70] * 3,
                  "input_spl_db": [None, 50.0, 80.0]}).to_csv(tmp_path / "m.csv", index=False)
    res = CliRunner().invoke(app, ["predict", "--manifest", str(tmp_path / "m.csv"), "--checkpoint", str(ckpt),
                                   "--out", str(tmp_path / "s.csv")])
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(pd.read_csv(tmp_path / "s.csv")["haaqinet"], list(score.values()), atol=1e-6)
    res = CliRunner().invoke(app, ["predict", str(tmp_path / "a.wav"), "--checkpoint", str(ckpt), "--spl", "70", "--audiogram", "N3",
                                   "--input-spl", "80", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["haaqinet"] == pytest.approx(score[80.0], abs=1e-6)
    assert "note:" not in res.output
    res = CliRunner().invoke(app, ["predict", str(tmp_path / "a.wav"), "--checkpoint", str(ckpt), "--json"])
    assert res.exit_code == 0 and "more accurate given the level" in res.output
    pd.DataFrame({"file": ["a.wav"], "audiogram": ["N3"], "spl_db": [70], "input_spl_db": ["loud"]}).to_csv(
        tmp_path / "bad.csv", index=False)
    res = CliRunner().invoke(app, ["predict", "--manifest", str(tmp_path / "bad.csv"), "--checkpoint", str(ckpt)])
    assert res.exit_code != 0 and "row 1: input_spl_db" in res.output


def test_bench_run_gives_each_ear_the_clean_music_level(monkeypatch):
    from benchmark import trial
    from benchmark.calibration import calibrate

    seen = {}

    class Recorder:
        def predict_signals(self, signals, audiograms, levels, input_levels):
            seen["input"] = list(input_levels)
            return np.full(len(signals), 0.5)

    monkeypatch.setattr(trial, "_predictor", lambda checkpoint: Recorder())
    rng = np.random.default_rng(0)
    music = np.stack([0.1 * rng.standard_normal(8000), 0.05 * rng.standard_normal(8000)])
    calibration = calibrate(music, 65.0)

    class Inp:
        haaqinet_checkpoint = "x"
        job = type("J", (), {"ears": ("left", "right")})()
        listener = type("L", (), {"ear": staticmethod(lambda ear: "N3")})()

    out = trial._haaqinet(Inp(), {"nalr": (2 * music, 0.0)}, 16000, calibration, music)
    assert set(out) == {("nalr", "left"), ("nalr", "right")}
    np.testing.assert_allclose(seen["input"], [calibration.db_spl(music[0]), calibration.db_spl(music[1])])
    assert seen["input"][0] - seen["input"][1] == pytest.approx(6.02, abs=0.1)


def test_evaluate_judges_with_the_level_given_or_withheld(level_teacher, tmp_path):
    folder, ckpt = level_teacher
    mse = {}
    for flag in ("--input-level", "--no-input-level"):
        out = tmp_path / f"{flag}.json"
        res = CliRunner().invoke(app, ["evaluate", "--data", str(folder), "--checkpoint", str(ckpt), "--split", "test",
                                       flag, "--json", str(out)])
        assert res.exit_code == 0, res.output
        mse[flag] = json.loads(out.read_text())["per_split"]["test"]["mse"]
    assert mse["--input-level"] != mse["--no-input-level"]


def test_finetuning_gives_the_ratings_level_to_the_network(level_teacher, tmp_path):
    from haaqinet.checkpoint import load_checkpoint
    from haaqinet.finetune import _Units
    from haaqinet.predict import Predictor
    from haaqinet.ratings import read_ratings

    _, ckpt = level_teacher
    t = np.arange(16000) / 16000
    sf.write(tmp_path / "a.wav", 0.1 * np.sin(2 * np.pi * 440 * t), 16000)
    pd.DataFrame({"file": ["a.wav"] * 3, "audiogram": ["N3"] * 3, "spl_db": [70] * 3, "score": [3, 3, 3],
                  "input_spl_db": [50, 80, ""]}).to_csv(tmp_path / "r.csv", index=False)
    table, _ = read_ratings(tmp_path / "r.csv", scale="mos")
    model = load_checkpoint(ckpt)
    units = _Units(model, table, Predictor(ckpt), "cpu")
    pred = units.predict_rows(model, np.arange(3), 3, "cpu")
    want = [Predictor(ckpt).predict_file(tmp_path / "a.wav", audiogram="N3", spl_db=70, input_spl_db=v)[0]["haaqinet"]
            for v in (50.0, 80.0, None)]
    np.testing.assert_allclose(pred, want, atol=1e-5)
    assert len(set(np.round(pred, 6))) == 3
