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
