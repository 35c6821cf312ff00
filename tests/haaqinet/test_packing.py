"""pack / unpack: a labelled data set as its recipe plus xz-compressed label rows."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from benchmark.errors import BenchError
from haaqinet import data, packing
from haaqinet.cli import app


def test_unpacked_set_has_the_same_items_and_audio_and_needs_no_labelling(toy_teacher, tmp_path):
    folder, _ = toy_teacher
    info = packing.pack(folder, tmp_path / "packed")
    assert info["items"] == 32 and info["errors"] == 0
    assert sorted(p.name for p in (tmp_path / "packed").iterdir()) == ["labels.jsonl.xz", "recipe.json"]
    new = tmp_path / "rebuilt"
    shutil.copytree(folder / "sources", new / "sources")      # synthetic sources have no score to render from
    assert packing.unpack(tmp_path / "packed", new) == {"items": 32, "rendered": 0}
    old_rows = {r["item_id"]: r for r in data.read_journal(folder)}
    new_rows = {r["item_id"]: r for r in data.read_journal(new)}
    assert new_rows == old_rows
    assert (new / "labels.parquet").is_file()
    summary = data.make_data(new)                               # everything is labelled already
    assert summary["total"] == 32 and len(data.read_journal(new)) == 32
    one = pd.DataFrame([old_rows[sorted(old_rows)[5]]])
    assert (data.model_inputs(new, one) == data.model_inputs(folder, one)).all()   # rebuilt from the recipe
    assert data.read_recipe(new) == data.read_recipe(folder)


def test_unpack_refuses_to_overwrite_and_explains_bad_input(toy_teacher, tmp_path):
    folder, _ = toy_teacher
    packing.pack(folder, tmp_path / "packed")
    with pytest.raises(BenchError, match="already holds a data set"):
        packing.unpack(tmp_path / "packed", folder)
    with pytest.raises(BenchError, match="not a packed label set"):
        packing.unpack(tmp_path / "nowhere", tmp_path / "x")
    empty = tmp_path / "empty"
    data.write_recipe(empty, data.read_recipe(folder))
    with pytest.raises(BenchError, match="no labelled items"):
        packing.pack(empty, tmp_path / "p2")


def test_cli_pack_and_unpack(toy_teacher, tmp_path):
    folder, _ = toy_teacher
    runner = CliRunner()
    res = runner.invoke(app, ["pack", "--data", str(folder), "--out", str(tmp_path / "packed")])
    assert res.exit_code == 0, res.output
    assert "packed 32 items (0 errors)" in res.output
    shutil.copytree(folder / "sources", tmp_path / "new" / "sources")
    res = runner.invoke(app, ["unpack", str(tmp_path / "packed"), "--out", str(tmp_path / "new")])
    assert res.exit_code == 0, res.output
    assert "32 labelled items, 0 sources rendered" in res.output
    res = runner.invoke(app, ["unpack", "no-such-set", "--out", str(tmp_path / "other")])
    assert res.exit_code != 0 and "not a packed label set" in res.output


def test_every_shipped_network_was_trained_on_a_shipped_label_set():
    """The labels a shipped checkpoint learned from are in the repository (haaqinet/datasets), recipe for recipe."""
    import json

    from haaqinet.packing import SHIPPED_DIR
    from haaqinet.predict import ENSEMBLE_CHECKPOINT, TEACHER_CHECKPOINT
    from haaqinet.train import recipe_hash

    shipped = {recipe_hash(json.loads((d / "recipe.json").read_text())) for d in SHIPPED_DIR.iterdir() if d.is_dir()}
    teacher = json.loads(TEACHER_CHECKPOINT.with_name(TEACHER_CHECKPOINT.name + ".json").read_text())
    assert teacher["extra"]["data"]["recipe_sha256_16"] in shipped
    ensemble = json.loads(ENSEMBLE_CHECKPOINT.with_name(ENSEMBLE_CHECKPOINT.name + ".json").read_text())
    assert ensemble["extra"]["data"]["recipe_sha256_16"] in shipped     # the data set it was evaluated on
    assert all(m["data_recipe_sha256_16"] in shipped for m in ensemble["extra"]["members"])
