"""The experiment scripts in scripts/ run end to end on the toy data set and report what they claim."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _run(monkeypatch, name: str, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", [name, *args])
    runpy.run_path(str(SCRIPTS / name), run_name="__main__")


def test_generalisation_script_relabels_the_same_items_four_ways(toy_teacher, tmp_path, monkeypatch):
    folder, ckpt = toy_teacher
    out = tmp_path / "gen.json"
    _run(monkeypatch, "haaqinet_generalisation.py", "--data", str(folder), "--groups", "1", "--checkpoint",
         str(ckpt), "--workers", "1", "--out", str(out))
    res = json.loads(out.read_text())["results"]
    assert list(res) == ["none", "ear", "piece", "both"]
    assert len({r["n"] for r in res.values()}) == 1 and res["none"]["n"] >= 3
    assert all(0.0 <= r["mse"] <= 1.0 for r in res.values())


def test_ensemble_script_mean_of_one_model_twice_is_that_model(toy_teacher, tmp_path, monkeypatch):
    folder, ckpt = toy_teacher
    out = tmp_path / "ens.json"
    _run(monkeypatch, "haaqinet_ensemble.py", "--data", str(folder), "--checkpoint", str(ckpt), "--checkpoint",
         str(ckpt), "--study-groups", "1", "--workers", "1", "--out", str(out))
    res = json.loads(out.read_text())
    for split, models in res["splits"].items():
        assert models["mean"]["mse"] == pytest.approx(models[ckpt.name]["mse"], abs=1e-12), split
    assert res["study"]["mean"]["pooled_lcc"] == pytest.approx(res["study"][ckpt.name]["pooled_lcc"], abs=1e-9)


def test_ensemble_script_subsets_are_scored_on_validation_only(toy_teacher, tmp_path, monkeypatch):
    import shutil

    folder, ckpt = toy_teacher
    copies = [shutil.copy(ckpt, tmp_path / f"copy{i}.pt") for i in (2, 3)]
    out = tmp_path / "ens.json"
    _run(monkeypatch, "haaqinet_ensemble.py", "--data", str(folder), "--checkpoint", str(ckpt), "--checkpoint",
         str(copies[0]), "--checkpoint", str(copies[1]), "--subsets", "--study-groups", "1", "--workers", "1",
         "--out", str(out))
    res = json.loads(out.read_text())
    assert list(res["subsets"]) == ["1+2", "1+3", "2+3", "1+2+3"]
    one = res["splits"]["val"][ckpt.name]
    for label, scores in res["subsets"].items():
        assert list(scores) == ["val"] and scores["val"]["mse"] == pytest.approx(one["mse"], abs=1e-12), label
        assert res["study"][f"mean of {label}"]["pooled_lcc"] == pytest.approx(
            res["study"][ckpt.name]["pooled_lcc"], abs=1e-9)


def _oracle():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import haaqinet_oracle
    finally:
        sys.path.remove(str(SCRIPTS))
    return haaqinet_oracle


def test_oracle_reference_maps_are_those_of_clean_music_through_nalr(toy_teacher):
    """The intrusive channels are the reference's maps: for a clean NAL-R item they equal the judged signal's."""
    import math

    import numpy as np

    from haaqinet import data

    oracle = _oracle()
    folder, _ = toy_teacher
    recipe = data.read_recipe(folder)
    rows = data.load_labels(folder).to_dict("records")[:3]
    model = oracle.widened_model(0, "intrusive")
    for row in rows:
        clean_row = {**row, "steps": {"aid": "nalr", "pre": [], "post": []}}
        judged, level1 = data.synthesise(clean_row, data.clean_excerpt(folder, recipe, row))
        spl = level1 + 20 * math.log10(float(np.sqrt(np.mean(judged ** 2))))
        mine = oracle.precompute_features(model, data.to_model_rate(judged)[None],
                                          np.asarray([row["audiogram_db_hl"]], np.float32), np.float32([spl]))
        ref = oracle.reference_features(model, folder, recipe, [{**row, "level1_db_spl": level1}])
        # equal up to the maps' float16 step (two code paths to the same NAL-R signal may round apart)
        assert np.abs(mine.astype(float) - ref.astype(float)).max() <= 1e-3, row["item_id"]
        other = oracle.reference_features(model, folder, recipe, [{**row, "level1_db_spl": level1 - 20}])
        assert np.abs(mine.astype(float) - other.astype(float)).max() > 0.1   # the level reaches the maps


@pytest.mark.parametrize("mode", ["intrusive", "level", "level-cond"])
def test_oracle_script_trains_and_reports_every_split_and_study(toy_teacher, tmp_path, monkeypatch, mode):
    folder, _ = toy_teacher
    out = tmp_path / "oracle.json"
    _run(monkeypatch, "haaqinet_oracle.py", "--data", str(folder), "--eval-data", str(folder), "--mode", mode,
         "--epochs", "1", "--val-study-groups", "1", "--test-study-groups", "1", "--workers", "1", "--out", str(out))
    res = json.loads(out.read_text())
    assert res["mode"] == mode and res["training"]["epochs"] == 1
    splits = {"val", "test", "unseen-conditions"}
    studies = ["val_study", "test_study"]
    if mode == "level-cond":   # also judged with the level withheld
        splits |= {f"{sp} (level withheld)" for sp in splits}
        studies += [f"{st} (level withheld)" for st in studies]
    assert set(res["splits"]) == splits
    assert all(0.0 <= m["mse"] <= 1.0 for m in res["splits"].values())
    for study in studies:
        assert len(res[study]["per_level_lcc"]) == 9 and res[study]["pooled"]["n"] >= 9


def test_oracle_level_columns_carry_the_level_only_where_known():
    import numpy as np

    cols = _oracle().level_columns([45.0, 85.0, 65.0], [True, False, True])
    assert cols.shape == (3, 2)
    assert np.allclose(cols / 100.0, [[-1.0, 1.0], [0.0, 0.0], [0.0, 1.0]])
