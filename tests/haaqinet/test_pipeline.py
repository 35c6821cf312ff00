"""End to end on a toy set: make-data -> train -> evaluate -> predict, through the CLI, in seconds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from benchmark.errors import AudioError, BenchError
from haaqinet import data
from haaqinet.cli import app

TINY = ["--frontend-arg", "dim=16", "--frontend-arg", "n_layers=2", "--frontend-arg", "n_heads=2",
        "--frontend-arg", "ffn_dim=32", "--model-arg", "adapter_dim=8", "--model-arg", "lstm_hidden=4",
        "--model-arg", "attention_dim=8", "--model-arg", "attention_heads=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    folder = root / "toy"
    sources = data.synthetic_sources(folder, n=4, seconds=1.5)
    data.write_recipe(folder, data.new_recipe(n_items=16, sources=sources, seed=1, item_s=1.0, n_listeners=8))
    runner = CliRunner()
    made = runner.invoke(app, ["make-data", "--out", str(folder)])
    assert made.exit_code == 0, made.output
    assert "HAAQI 0.9-1.0" in made.output
    ckpt = root / "tiny.pt"
    trained = runner.invoke(app, ["train", "--data", str(folder), "--out", str(ckpt), "--epochs", "2",
                                  "--batch-size", "4", *TINY])
    assert trained.exit_code == 0, trained.output
    return folder, ckpt, root


def test_checkpoint_sidecar_describes_the_training(trained):
    folder, ckpt, _ = trained
    side = json.loads((ckpt.parent / (ckpt.name + ".json")).read_text())
    assert set(side["metrics"]["per_split"]) >= {"train", "test"}
    extra = side["extra"]
    assert extra["data"]["data_version"] == data.DATA_VERSION and extra["data"]["n_train"] > 0
    assert extra["hardware"]["device"] == "cpu" and extra["training_seconds"] > 0
    assert len(side["metrics"]["history"]["epochs"]) == 2


def _weights(path):
    from haaqinet.checkpoint import load_checkpoint, weights_fingerprint

    return weights_fingerprint(load_checkpoint(path))


def test_a_warm_start_keeps_its_weights_unless_an_epoch_beats_them(trained, tmp_path):
    folder, ckpt, _ = trained
    runner = CliRunner()
    frozen = tmp_path / "frozen.pt"    # lr 0: no epoch can beat the start, so the start is what is saved
    res = runner.invoke(app, ["train", "--data", str(folder), "--init", str(ckpt), "--out", str(frozen),
                              "--epochs", "1", "--batch-size", "4", "--lr", "0"])
    assert res.exit_code == 0, res.output
    assert _weights(frozen) == _weights(ckpt)
    side = json.loads((tmp_path / "frozen.pt.json").read_text())
    assert side["extra"]["init"]["path"] == str(ckpt) and len(side["extra"]["init"]["sha256_12"]) == 12
    epochs = side["metrics"]["history"]["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1] and epochs[0]["train_loss"] is None
    assert side["model_args"] == json.loads((ckpt.parent / (ckpt.name + ".json")).read_text())["model_args"]
    moved = tmp_path / "moved.pt"      # large steps: the start is kept exactly when no epoch beat its val MSE
    res = runner.invoke(app, ["train", "--data", str(folder), "--init", str(ckpt), "--out", str(moved),
                              "--epochs", "2", "--batch-size", "4", "--lr", "0.5", "--warmup-steps", "1"])
    assert res.exit_code == 0, res.output
    side = json.loads((tmp_path / "moved.pt.json").read_text())
    start, *later = [e["val"]["mse"] for e in side["metrics"]["history"]["epochs"]]
    assert (_weights(moved) == _weights(ckpt)) == (min(later) >= start)


@pytest.mark.parametrize("extra, message", [
    (["--init", "nope.pt"], "does not exist"),
    (["--model-arg", "lstm_hidden=4"], "takes the architecture from the checkpoint"),
    (["--frontend", "mel"], "pass --frontend auditory"),
])
def test_a_warm_start_with_a_bad_checkpoint_or_clashing_options_fails_clearly(trained, tmp_path, extra, message):
    folder, ckpt, _ = trained
    args = ["train", "--data", str(folder), "--out", str(tmp_path / "x.pt"), "--epochs", "1"]
    res = CliRunner().invoke(app, args + (extra if extra[0] == "--init" else ["--init", str(ckpt), *extra]))
    assert res.exit_code != 0 and message in res.output
    assert not (tmp_path / "x.pt").exists()


def test_evaluate_reports_every_statistic(trained, tmp_path):
    folder, ckpt, _ = trained
    out = tmp_path / "rep.json"
    res = CliRunner().invoke(app, ["evaluate", "--data", str(folder), "--checkpoint", str(ckpt), "--json", str(out),
                                   "--predictions", str(tmp_path / "pred.csv")])
    assert res.exit_code == 0, res.output
    assert "Per SPL band" in res.output and "Per severity" in res.output and "Targets" in res.output
    assert "Where the error comes from, test" in res.output
    rep = json.loads(out.read_text())
    assert set(rep["overall"]) == {"n", "lcc", "srcc", "mse", "kendall"}
    pred = pd.read_csv(tmp_path / "pred.csv")
    assert pred["haaqinet"].between(0, 1).all() and len(pred) == rep["overall"]["n"]


def test_error_sources_split_the_squared_error_by_kind_and_clean_aid():
    from haaqinet.evaluate import error_sources

    df = pd.DataFrame({"kinds": [["level"], [], ["level", "tilt"], [], []],
                       "aid": ["nalr", "nalr", "nalr", "camfit-wdrc", "nalr"],
                       "haaqi": [0.5, 1.0, 0.4, 0.8, 1.0], "haaqinet": [0.8, 0.9, 0.5, 0.8, 0.9]})
    rows = {r["group"]: r for r in error_sources(df)}
    assert set(rows) == {"level", "tilt", "clean nalr", "clean camfit-wdrc"}
    total = 0.09 + 0.01 + 0.01 + 0.0 + 0.01
    assert rows["level"]["n"] == 2 and abs(rows["level"]["share_of_squared_error"] - 0.10 / total) < 1e-12
    assert abs(rows["clean nalr"]["bias"] + 0.1) < 1e-12 and rows["clean camfit-wdrc"]["mse"] == 0.0
    shares = [r["share_of_squared_error"] for r in error_sources(df)]
    assert shares == sorted(shares, reverse=True)


def _write(path, x, rate):
    sf.write(str(path), np.asarray(x).T, rate)
    return path


def _tone(rate, seconds=1.0, channels=1):
    t = np.arange(int(rate * seconds)) / rate
    x = 0.1 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.sin(2 * np.pi * 1500 * t)
    return np.tile(x, (channels, 1))


def test_predict_files_json_and_manifest(trained, tmp_path):
    _, ckpt, _ = trained
    mono = _write(tmp_path / "mono.wav", _tone(44100), 44100)
    stereo = _write(tmp_path / "stereo.flac", _tone(22050, channels=2) * [[1.0], [0.5]], 22050)
    runner = CliRunner()
    res = runner.invoke(app, ["predict", str(mono), str(stereo), "--audiogram", "N3", "--spl", "70",
                              "--checkpoint", str(ckpt), "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [(r["file"], r["ear"]) for r in rows] == [(str(mono), "mono"), (str(stereo), "left"),
                                                     (str(stereo), "right")]
    assert all(0 < r["haaqinet"] < 1 for r in rows)
    manifest = tmp_path / "items.csv"
    pd.DataFrame({"file": ["stereo.flac", "mono.wav"], "audiogram": ["10 20 30 40 50 60 60 60", "N2"],
                  "spl_db": [60, 80]}).to_csv(manifest, index=False)
    res = runner.invoke(app, ["predict", "--manifest", str(manifest), "--out", str(tmp_path / "scores.csv"),
                              "--checkpoint", str(ckpt)])
    assert res.exit_code == 0, res.output
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert list(scores["file"]) == ["stereo.flac", "mono.wav"] and scores["haaqinet"].between(0, 1).all()


def test_predictions_do_not_depend_on_digital_scale_or_batching(trained):
    from haaqinet.predict import Predictor

    _, ckpt, _ = trained
    p = Predictor(ckpt, batch_size=2)
    x = _tone(16000)[0]
    a = p.predict_signals([x, 0.1 * x, x[:12000]], ["N3"] * 3, [70, 70, 70])
    assert a[0] == pytest.approx(a[1], abs=1e-5)
    b = Predictor(ckpt, batch_size=1).predict_signals([x[:12000]], ["N3"], [70])
    assert a[2] == pytest.approx(b[0], abs=1e-5)


def test_clear_errors(trained, tmp_path):
    from haaqinet.predict import Predictor

    _, ckpt, _ = trained
    p = Predictor(ckpt)
    with pytest.raises(AudioError, match="too low"):
        p.predict_file(_write(tmp_path / "low.wav", _tone(4000), 4000), audiogram="N3", spl_db=65)
    with pytest.raises(AudioError, match="silent"):
        p.predict_file(_write(tmp_path / "zero.wav", np.zeros((1, 16000)), 16000), audiogram="N3", spl_db=65)
    ok = _write(tmp_path / "ok.wav", _tone(16000), 16000)
    with pytest.raises(BenchError, match="audiogram"):
        p.predict_file(ok, audiogram="N9", spl_db=65)
    with pytest.raises(BenchError, match="not found"):
        Predictor(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BenchError, match="not a readable torch checkpoint"):
        Predictor(tmp_path / "junk.pt")
    res = CliRunner().invoke(app, ["predict", str(ok), "--audiogram", "N3", "--checkpoint", str(tmp_path / "m.pt")])
    assert res.exit_code == 2 and "not found" in res.output


def test_the_shipped_checkpoints_load_and_the_default_scores_a_file(tmp_path):
    from haaqinet.predict import DEFAULT_CHECKPOINT, ENSEMBLE_CHECKPOINT, TEACHER_CHECKPOINT, Predictor

    if not (DEFAULT_CHECKPOINT.is_file() and TEACHER_CHECKPOINT.is_file()):
        pytest.skip("no shipped checkpoint in this checkout")
    assert DEFAULT_CHECKPOINT == ENSEMBLE_CHECKPOINT != TEACHER_CHECKPOINT
    for path in (TEACHER_CHECKPOINT, ENSEMBLE_CHECKPOINT):
        side = json.loads(path.with_name(path.name + ".json").read_text())
        assert {"test", "unseen-conditions", "val"} <= set(side["metrics"]["per_split"])
    teacher = json.loads(TEACHER_CHECKPOINT.with_name(TEACHER_CHECKPOINT.name + ".json").read_text())
    assert teacher["extra"]["hardware"]["device"] and teacher["extra"]["data"]["data_version"] == data.DATA_VERSION
    assert side["model_name"] == "HAAQINetEnsemble" and len(side["extra"]["members"]) >= 2
    assert teacher["model_args"]["input_level"] is True
    wav = _write(tmp_path / "s.wav", _tone(44100, 2.0, channels=2), 44100)
    rows = Predictor().predict_file(wav, audiogram="N3", spl_db=65, input_spl_db=65)
    assert [r["ear"] for r in rows] == ["left", "right"] and all(0 < r["haaqinet"] < 1 for r in rows)
