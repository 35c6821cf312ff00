"""Ratings CSV validation, the synthetic ratings generator, the statistics, and fine-tuning end to end on toy data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from benchmark.errors import BenchError
from haaqinet.cli import app
from haaqinet.finetune import paired_bootstrap, split_by_file, williams_test
from haaqinet.ratings import from_unit, read_ratings, synthetic_mos, to_unit


@pytest.fixture()
def stimuli(tmp_path):
    t = np.arange(16000) / 16000
    for name in ("a.wav", "b.wav"):
        sf.write(str(tmp_path / name), 0.1 * np.sin(2 * np.pi * 440 * t), 16000)
    return tmp_path


def _csv(folder, rows, name="ratings.csv"):
    path = folder / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


GOOD = [{"file": "a.wav", "audiogram": "N3", "spl_db": 65, "score": 4.5, "listener": "L1"},
        {"file": "b.wav", "audiogram": "10,20,30,40,50,60,60,60", "spl_db": 70.5, "score": 1, "listener": "L2"}]


def test_a_valid_csv_maps_scores_to_unit_range(stimuli):
    table, scale = read_ratings(_csv(stimuli, GOOD), scale="mos")
    assert scale == "mos" and list(table["target"]) == [0.875, 0.0]
    assert table["path"][0] == str(stimuli / "a.wav") and len(table["audiogram_db_hl"][1]) == 8
    mushra = [{**r, "score": s, "scale": "MUSHRA"} for r, s in zip(GOOD, (80, 5))]
    table, scale = read_ratings(_csv(stimuli, mushra, "m.csv"))
    assert scale == "mushra" and list(table["target"]) == [0.8, 0.05]
    assert to_unit([1, 3, 5], "mos").tolist() == [0, 0.5, 1] and from_unit([0.5], "mushra")[0] == 50
    assert table["input_spl_db"].isna().all()   # the optional clean-music level: unknown without the column
    table, _ = read_ratings(_csv(stimuli, [{**GOOD[0], "input_spl_db": 60}, {**GOOD[1], "input_spl_db": ""}],
                                 "i.csv"), scale="mos")
    assert table["input_spl_db"].iloc[0] == 60 and np.isnan(table["input_spl_db"].iloc[1])


@pytest.mark.parametrize("change, scale, message", [
    (lambda r: [{k: v for k, v in x.items() if k != "score"} for x in r], "mos", r"lacks the column\(s\) \['score'\]"),
    (lambda r: r, None, "declare the score scale"),
    (lambda r: r, "stars", "unknown rating scale 'stars'"),
    (lambda r: [{**x, "scale": s} for x, s in zip(r, ("mos", "mushra"))], None, "mixes"),
    (lambda r: [{**x, "scale": "mushra"} for x in r], "mos", "contradicts"),
    (lambda r: [{**r[0], "score": 6}, r[1]], "mos", r"line 2: score 6 is outside the 1-5 MOS scale"),
    (lambda r: [{**r[0], "score": 101}, r[1]], "mushra", r"line 2: score 101 is outside the 0-100"),
    (lambda r: [r[0], {**r[1], "score": "good"}], "mos", r"line 3: score 'good' is not a number"),
    (lambda r: [{**r[0], "file": "missing.wav"}, r[1]], "mos", r"line 2: audio file not found: .*missing.wav"),
    (lambda r: [{**r[0], "audiogram": "N9"}, r[1]], "mos", r"line 2: unknown audiogram 'N9'"),
    (lambda r: [{**r[0], "audiogram": "10,20,30"}, r[1]], "mos", r"line 2: audiogram '10,20,30' has 3 values"),
    (lambda r: [{**r[0], "spl_db": 150}, r[1]], "mos", r"line 2: SPL 150.0 dB is out of range"),
    (lambda r: [{**r[0], "spl_db": "loud"}, r[1]], "mos", r"line 2: spl_db 'loud' is not a number"),
    (lambda r: [{**r[0], "input_spl_db": "x"}, r[1]], "mos", r"line 2: input_spl_db must be a level"),
    (lambda r: [{**r[0], "input_spl_db": 200}, r[1]], "mos", r"line 2: input_spl_db: SPL 200.0 dB is out of range"),
])
def test_invalid_ratings_give_clear_errors(stimuli, change, scale, message):
    with pytest.raises(BenchError, match=message):
        read_ratings(_csv(stimuli, change([dict(r) for r in GOOD])), scale=scale)


def test_every_problem_is_listed_and_files_are_checked(stimuli):
    rows = [{**GOOD[0], "score": 9, "audiogram": "N9"}, {**GOOD[1], "file": "nope.wav"}]
    with pytest.raises(BenchError, match="3 problem") as err:
        read_ratings(_csv(stimuli, rows), scale="mos")
    assert "line 2" in str(err.value) and "line 3" in str(err.value)
    with pytest.raises(BenchError, match="not found"):
        read_ratings(stimuli / "absent.csv", scale="mos")
    (stimuli / "empty.csv").write_text("file,audiogram,spl_db,score\n")
    with pytest.raises(BenchError, match="no ratings"):
        read_ratings(stimuli / "empty.csv", scale="mos")


def test_synthetic_rating_model_is_monotone_and_non_linear():
    h = np.linspace(0, 1, 101)
    mos = synthetic_mos(h)
    assert np.all(np.diff(mos) > 0) and 1 <= mos.min() and mos.max() <= 5
    slopes = np.diff(mos)
    assert slopes.max() > 5 * slopes.min()  # steep in the middle, flat at the floor and ceiling


def test_statistics():
    rng = np.random.default_rng(0)
    y = rng.random(60)
    good, poor = y + 0.05 * rng.standard_normal(60), y + 0.4 * rng.standard_normal(60)
    boot = paired_bootstrap(y, poor, good, np.arange(60), n_boot=300, seed=1)
    assert boot["lcc"]["delta"] > 0 and 0 < boot["lcc"]["ci_low"] <= boot["lcc"]["ci_high"]
    assert boot["mse"]["delta"] < 0 and boot["lcc"]["p_le_0"] == 0.0
    assert paired_bootstrap(y, poor, good, np.arange(60), n_boot=300, seed=1) == boot  # seeded
    w = williams_test(0.9, 0.6, 0.7, 60)
    assert w["t"] > 0 and w["df"] == 57 and w["p"] < 0.001
    assert williams_test(0.7, 0.7, 0.5, 60)["t"] == 0.0
    assert williams_test(0.6, 0.9, 0.7, 60)["t"] == pytest.approx(-w["t"])
    split = split_by_file(["a", "a", "b", "c", "d", "e", "f"], held_out=0.3, val=0.2, seed=0)
    assert split[0] == split[1] and {"train", "val", "held-out"} == set(split)
    with pytest.raises(BenchError, match="at least 3 distinct"):
        split_by_file(["a", "b", "a"], held_out=0.2, val=0.2, seed=0)


def test_synth_ratings_and_finetune_end_to_end(toy_teacher, tmp_path):
    folder, teacher = toy_teacher
    runner = CliRunner()
    ratings = tmp_path / "ratings"
    res = runner.invoke(app, ["synth-ratings", "--data", str(folder), "--out", str(ratings), "--n-items", "32",
                              "--split", "train", "--split", "val", "--split", "test", "--split", "unseen-conditions"])
    assert res.exit_code == 0, res.output
    assert "demonstration" in res.output.lower()
    table, scale = read_ratings(ratings / "ratings.csv")
    meta = json.loads((ratings / "synthetic.json").read_text())
    assert scale == "mos" and table["score"].between(1, 5).all() and 20 <= len(table) == len(meta["items"]) <= 32
    assert table["spl_db"].between(20, 110).all() and meta["model"]["slope"] > 0
    out = tmp_path / "tuned.pt"
    res = runner.invoke(app, ["finetune", "--ratings", str(ratings / "ratings.csv"), "--checkpoint", str(teacher),
                              "--out", str(out), "--epochs", "3", "--batch-size", "8", "--bootstrap", "200",
                              "--freeze", "frontend", "--held-out", "0.3", "--json", str(tmp_path / "rep.json"),
                              "--predictions", str(tmp_path / "pred.csv")])
    assert res.exit_code == 0, res.output
    assert "zero-shot" in res.output and "95 % bootstrap CI" in res.output and "Williams" in res.output
    rep = json.loads((tmp_path / "rep.json").read_text())
    held = rep["held_out"]
    assert held["zero_shot"]["n"] == held["finetuned"]["n"] == rep["split_counts"]["held-out"] >= 3
    for stat in ("lcc", "srcc", "mse"):
        b = held["bootstrap"][stat]
        assert b["ci_low"] <= b["ci_high"] or np.isnan(b["ci_low"])
    assert rep["frozen"] == ["frontend"]
    assert rep["best_val_mse"] <= min(e["val"]["mse"] for e in rep["history"]) + 1e-12
    side = json.loads((tmp_path / "tuned.pt.json").read_text())
    assert side["extra"]["ratings"]["scale"] == "mos" and "not HAAQI" in side["extra"]["output"]
    pred = pd.read_csv(tmp_path / "pred.csv")
    assert pred.loc[pred["split"] == "held-out", "finetuned"].between(0, 1).all()


def test_finetune_errors(toy_teacher, stimuli):
    _, teacher = toy_teacher
    csv = _csv(stimuli, GOOD)
    runner = CliRunner()
    res = runner.invoke(app, ["finetune", "--ratings", str(csv), "--checkpoint", str(teacher)])
    assert res.exit_code == 2 and "declare the score scale" in res.output
    res = runner.invoke(app, ["finetune", "--ratings", str(csv), "--scale", "mos", "--checkpoint", str(teacher)])
    assert res.exit_code == 2 and "at least 3 distinct audio files" in res.output
    rows = GOOD + [{**GOOD[0], "file": "b.wav"}, {**GOOD[1], "file": "a.wav"}]
    for i, name in enumerate(("c.wav", "d.wav")):
        sf.write(str(stimuli / name), 0.1 * np.sin(np.arange(16000) * (0.1 + i)), 16000)
        rows.append({**GOOD[0], "file": name})
    res = runner.invoke(app, ["finetune", "--ratings", str(_csv(stimuli, rows, "r4.csv")), "--scale", "mos",
                              "--checkpoint", str(teacher), "--freeze", "encoderr", "--out",
                              str(stimuli / "x.pt")])
    assert res.exit_code == 2 and "unknown layer group 'encoderr'" in res.output


def test_calibrate_learns_a_known_monotone_map_of_the_scores(toy_teacher, tmp_path):
    """Ratings that are an exact monotone map of the teacher's own scores: the 4-parameter map must fit them
    far better than the scores as they are, and nothing else in the network may change."""
    import torch

    from haaqinet.checkpoint import load_checkpoint
    from haaqinet.finetune import CALIBRATE_FREEZE, FinetuneConfig, finetune
    from haaqinet.predict import Predictor

    folder, teacher = toy_teacher
    ratings = tmp_path / "ratings"
    res = CliRunner().invoke(app, ["synth-ratings", "--data", str(folder), "--out", str(ratings), "--n-items", "32",
                                   "--split", "train", "--split", "val", "--split", "test",
                                   "--split", "unseen-conditions"])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(ratings / "ratings.csv")
    p = Predictor(teacher).predict_manifest(table, base_dir=ratings)["haaqinet"].to_numpy()
    target = 0.15 + 0.7 / (1 + np.exp(-(2 * np.log(p / (1 - p)) + 1.5)))   # in the map's family, far from p
    table["score"] = 1 + 4 * target
    table.to_csv(ratings / "mapped.csv", index=False)
    cfg = FinetuneConfig(checkpoint=str(teacher), calibrate=True, epochs=80, batch_size=8, patience=80,
                         bootstrap=200, held_out=0.3)
    assert cfg.freeze == list(CALIBRATE_FREEZE) and cfg.lr == 0.02
    model, rep = finetune(ratings / "mapped.csv", tmp_path / "cal.pt", cfg, log=lambda *_: None,
                          predictions=tmp_path / "pred.csv")
    held = rep["held_out"]
    assert held["finetuned"]["mse"] < 0.05 * held["zero_shot"]["mse"], held
    assert abs(held["finetuned"]["srcc"] - held["zero_shot"]["srcc"]) < 1e-9      # monotone: order kept
    tuned = load_checkpoint(tmp_path / "cal.pt")
    base = load_checkpoint(teacher)
    assert tuned.model_args == {**base.model_args, "score_map": True}
    changed = {k for k, v in tuned.state_dict().items() if k not in base.state_dict()
               or not torch.equal(v, base.state_dict()[k])}
    assert changed and all(k.startswith("score_map.") for k in changed)
    from haaqinet.finetune import _set_train_mode, apply_freeze
    _set_train_mode(tuned, apply_freeze(tuned, CALIBRATE_FREEZE))   # nothing around the head's dropout trains
    assert tuned.score_map.training and not tuned.dropout.training
    pred = pd.read_csv(tmp_path / "pred.csv")       # training applied the map to cached scores: the saved
    held_rows = pred[pred["split"] == "held-out"]   # model, run from the audio, gives the same predictions
    again = Predictor(tmp_path / "cal.pt").predict_manifest(table.loc[held_rows.index], base_dir=ratings)
    np.testing.assert_allclose(again["haaqinet"].to_numpy(), held_rows["finetuned"].to_numpy(), atol=1e-5)
