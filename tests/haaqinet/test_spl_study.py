"""SPL robustness study on toy data: relabelling, the table's shape and range, outputs, the cache."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from benchmark.audiogram import SEVERITY_ORDER
from haaqinet.cli import app
from haaqinet.spl_study import TABLE_COLUMNS, build_study, run_study


def test_relabelling_follows_the_level(toy_teacher):
    folder, _ = toy_teacher
    table, x16, info = build_study(folder, n_groups=2, spls=(45, 85), log=lambda *_: None)
    assert info["n_items"] == 8 and len(table) == 16 and x16.shape == (16, 16000)
    assert table["haaqi"].between(0, 1).all()
    by = table.pivot(index="item_id", columns="spl_db", values="judged_db_spl")
    assert ((by[85.0] - by[45.0]) > 20).all()  # the judged level follows the presentation level
    again, _, info2 = build_study(folder, n_groups=2, spls=(45, 85), log=lambda *_: None)
    assert info2["cached"] and np.allclose(again["haaqi"], table["haaqi"])


def test_a_study_larger_than_the_labelled_groups_says_so(toy_teacher):
    folder, _ = toy_teacher
    said = []
    table, _, info = build_study(folder, n_groups=50, spls=(45,), log=said.append)
    groups = table["item_id"].str[:6].nunique()
    assert groups < 50 and any(f"only {groups} labelled test groups, not the 50" in m for m in said), said


def test_study_table_shape_and_range(toy_teacher):
    folder, teacher = toy_teacher
    spls = (45, 65, 85)
    result = run_study([str(teacher)], folder, n_groups=2, spls=spls, log=lambda *_: None)
    t = result["table"]
    assert list(t.columns) == list(TABLE_COLUMNS)
    sevs = sorted(set(result["items"]["severity"]), key=SEVERITY_ORDER.index)
    assert len(t) == len(spls) * (1 + len(sevs))
    assert sorted(set(t["spl_db"])) == [45.0, 65.0, 85.0] and set(t["severity"]) == {"all", *sevs}
    alls = t[t["severity"] == "all"]
    assert (alls["n"] == 8).all() and alls[["lcc", "srcc"]].notna().all().all()
    vals = t[["lcc", "srcc"]].to_numpy().ravel()
    vals = vals[np.isfinite(vals)]
    assert ((vals >= -1) & (vals <= 1)).all() and (t["mse"] >= 0).all()
    s = result["checkpoints"]["teacher.pt"]["summary"]
    assert s["gap"] == s["best_lcc"] - s["worst_lcc"] >= 0 and s["goal_met"] == (s["gap"] <= 0.03)


def test_spl_study_cli_writes_the_leaderboard_files(toy_teacher, tmp_path):
    folder, teacher = toy_teacher
    out = tmp_path / "boards"
    res = CliRunner().invoke(app, ["spl-study", "--data", str(folder), "--checkpoint", str(teacher),
                                   "--n-groups", "2", "--spl", "45,85", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "gap best-worst LCC" in res.output and "95 % interval" in res.output
    md = (out / "haaqinet-spl-study.md").read_text()
    assert "bench haaqinet spl-study" in md and "sha256" in md and "haaqinet-spl-study.png" in md
    assert "gap 95 % interval" in md and "bootstrap resamples of the study's 2 groups" in md
    assert (out / "haaqinet-spl-study.png").stat().st_size > 1000
    table = pd.read_csv(out / "haaqinet-spl-study.csv")
    assert list(table.columns) == list(TABLE_COLUMNS)
    doc = json.loads((out / "haaqinet-spl-study.json").read_text())
    assert doc["info"]["n_items"] == 8 and "teacher.pt" in doc["checkpoints"]
    bad = CliRunner().invoke(app, ["spl-study", "--data", str(folder), "--spl", "45,150", "--out", str(out)])
    assert bad.exit_code == 2 and "out of range" in bad.output


def test_a_study_on_the_validation_split_uses_only_validation_groups(toy_teacher, tmp_path):
    from haaqinet import data

    folder, teacher = toy_teacher
    labels = data.load_labels(folder)
    val_items = set(labels.loc[labels["split"] == "val", "item_id"])
    res = CliRunner().invoke(app, ["spl-study", "--data", str(folder), "--checkpoint", str(teacher), "--split", "val",
                                   "--n-groups", "5", "--spl", "45,85", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "haaqinet-spl-study.json").read_text())
    assert doc["info"]["split"] == "val" and doc["info"]["n_items"] == len(val_items) > 0
    table = pd.read_csv(tmp_path / "haaqinet-spl-study.csv")
    assert (table.loc[table["severity"] == "all", "n"] == len(val_items)).all()
    assert "validation split" in (tmp_path / "haaqinet-spl-study.md").read_text()
    missing = CliRunner().invoke(app, ["spl-study", "--data", str(folder), "--checkpoint", str(teacher),
                                       "--split", "nonsense", "--out", str(tmp_path)])
    assert missing.exit_code == 2 and "no labelled nonsense items" in missing.output


def _synthetic_study(noise_by_level, n_groups=60, seed=0):
    """Groups of 4 items at every level; predictions are HAAQI plus noise of a given sd per level."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        base = rng.uniform(0, 1, 4)
        for level, sd in noise_by_level.items():
            for k, h in enumerate(base):
                rows.append({"group": g, "spl_db": float(level), "haaqi": h, "haaqinet": h + rng.normal(0, sd)})
    return pd.DataFrame(rows)


def test_the_gap_interval_separates_a_level_effect_from_sampling_noise():
    from haaqinet.spl_study import GOAL_GAP, gap_interval

    flat = gap_interval(_synthetic_study({45: 0.1, 65: 0.1, 85: 0.1}), n_boot=300)
    tilted = gap_interval(_synthetic_study({45: 0.3, 65: 0.1, 85: 0.1}), n_boot=300)
    assert flat["gap_ci95"][0] < GOAL_GAP < tilted["gap_ci95"][0]
    assert tilted["share_within_goal"] < 0.05 < flat["share_within_goal"]
    assert flat["lcc_se"][45.0] > 0 and set(flat["lcc_se"]) == {45.0, 65.0, 85.0}
    again = gap_interval(_synthetic_study({45: 0.1, 65: 0.1, 85: 0.1}), n_boot=300)
    assert again == flat                           # seeded: the same study gives the same interval
