"""Several runs ranked together: a processor run alone beside others gives the combined run's board."""

import json
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.errors import BenchError
from benchmark.merge import load_runs


def _run(tmp_path, audio_folder, processors, run_id, *extra, monkeypatch=None):
    args = ["run", "--processor", processors, "--spl", "65", "--audiograms", "N3", "--corpus", str(audio_folder),
            "--limit", "2", "--excerpt-s", "1", "--workers", "0", "--no-haaqinet", "--results", str(tmp_path),
            "--run-id", run_id, *extra]
    if monkeypatch is not None:                 # recorded in run.json as typed
        monkeypatch.setattr(sys, "argv", ["/usr/bin/bench", *args])
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return tmp_path / run_id


@pytest.fixture
def runs(tmp_path, audio_folder, monkeypatch):
    """Two runs of the same trials, with nalr in both."""
    return {name: _run(tmp_path, audio_folder, procs, name, monkeypatch=monkeypatch)
            for name, procs in (("base", "unprocessed,nalr"), ("new", "nalr-agc,nalr"))}


def _ranking(text: str) -> list[str]:
    section = text.split("## Ranking by mean HAAQI")[1].split("\n## ")[0]
    return [line for line in section.splitlines() if line.startswith("| ")]


def test_runs_ranked_together_match_one_combined_run(runs, tmp_path, audio_folder):
    runs["all"] = _run(tmp_path, audio_folder, "unprocessed,nalr-agc,nalr", "all")
    merged, commands = load_runs([runs["base"], runs["new"]])
    combined = pd.read_parquet(runs["all"] / "scores.parquet")
    assert len(commands) == 2
    assert merged["trial_key"].tolist() == combined["trial_key"].tolist()
    assert merged["haaqi"].tolist() == combined["haaqi"].tolist()   # nalr kept once
    out = tmp_path / "board.md"
    res = CliRunner().invoke(app, ["leaderboard", str(runs["base"]), str(runs["new"]), "--out", str(out)])
    assert res.exit_code == 0, res.output
    one = CliRunner().invoke(app, ["leaderboard", str(runs["all"]), "--out", str(tmp_path / "all.md")])
    assert one.exit_code == 0, one.output
    text = out.read_text()
    assert _ranking(text) == _ranking((tmp_path / "all.md").read_text())
    assert "run base, new" in text and text.count("bench run --processor") == 2
    plots = CliRunner().invoke(app, ["plot", str(runs["base"]), str(runs["new"]), "--out", str(tmp_path / "p")])
    assert plots.exit_code == 0, plots.output
    assert list((tmp_path / "p").glob("*.png"))


def test_several_runs_need_an_output_path(runs):
    before = (runs["base"] / "leaderboard.md").read_text()
    for command in ("leaderboard", "plot"):
        res = CliRunner().invoke(app, [command, str(runs["base"]), str(runs["new"])])
        assert res.exit_code != 0 and "--out" in res.output
    assert (runs["base"] / "leaderboard.md").read_text() == before     # the run's own board untouched


def test_runs_over_other_trials_are_refused(runs, tmp_path, audio_folder):
    other_spl = _run(tmp_path, audio_folder, "nalr-agc", "spl70", "--spl", "70")
    with pytest.raises(BenchError, match="judged different trials"):
        load_runs([runs["base"], other_spl])
    with pytest.raises(BenchError, match="given twice"):
        load_runs([runs["base"], runs["base"]])


def test_a_shared_processor_must_have_the_same_scores(runs):
    path = runs["new"] / "scores.parquet"
    table = pd.read_parquet(path)
    nalr = table["processor"] == "nalr"
    table.loc[nalr, "haaqi"] += 3e-10                                # as on a CPU of another family: the same
    table.to_parquet(path, index=False)
    merged, _ = load_runs([runs["base"], runs["new"]])
    kept = merged[merged["processor"] == "nalr"].set_index("trial_key")["haaqi"]
    base = pd.read_parquet(runs["base"] / "scores.parquet").set_index("trial_key")["haaqi"]
    assert kept.to_dict() == base[kept.index].to_dict()             # the first run's rows
    table.loc[nalr, "haaqi"] += 1e-5                                 # as if made by other code
    table.to_parquet(path, index=False)
    with pytest.raises(BenchError, match="nalr.*different results on 4 of 4 trials"):
        load_runs([runs["base"], runs["new"]])


@pytest.mark.parametrize("key, value", [("reference", "clean"), ("excerpt_s", 2.0), ("haaqi_backend", "pyclarity")])
def test_runs_with_other_settings_are_refused(runs, key, value):
    meta = json.loads((runs["new"] / "run.json").read_text())
    meta["config"][key] = value
    (runs["new"] / "run.json").write_text(json.dumps(meta))
    with pytest.raises(BenchError, match=f"sweep setting '{key}'"):
        load_runs([runs["base"], runs["new"]])


def test_listeners_with_other_audiograms_are_refused(runs):
    meta = json.loads((runs["new"] / "run.json").read_text())
    meta["config"]["listeners"][0]["left"]["levels_db_hl"][0] += 5
    (runs["new"] / "run.json").write_text(json.dumps(meta))
    with pytest.raises(BenchError, match="sweep setting 'listeners'"):
        load_runs([runs["base"], runs["new"]])


def test_runs_with_other_provenance_are_refused(runs):
    table = pd.read_parquet(runs["base"] / "scores.parquet")
    table["haaqi_backend_version"] = "other-version"
    table.to_parquet(runs["base"] / "scores.parquet", index=False)
    with pytest.raises(BenchError, match="haaqi_backend_version.*other-version"):
        load_runs([runs["base"], runs["new"]])
    (runs["new"] / "run.json").unlink()
    with pytest.raises(BenchError, match="run.json: new"):
        load_runs([runs["base"], runs["new"]])


def test_like_takes_the_sweep_of_a_run_so_that_they_rank_together(runs, tmp_path):
    args = ["run", "--processor", "nalr-agc", "--like", str(runs["base"]), "--workers", "0",
            "--results", str(tmp_path), "--run-id", "liked"]
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    base = json.loads((runs["base"] / "run.json").read_text())["config"]
    liked = json.loads((tmp_path / "liked" / "run.json").read_text())["config"]
    assert [p["name"] for p in liked.pop("processors")] == ["nalr-agc"]
    base.pop("processors")
    assert liked == base                                   # corpus, clips, SPLs, listeners, excerpt, HAAQI-Net off
    merged, _ = load_runs([runs["base"], tmp_path / "liked"])
    assert sorted(merged["processor"].unique()) == ["nalr", "nalr-agc", "unprocessed"]


def test_like_refuses_sweep_options_beside_it_and_a_folder_that_is_not_a_run(runs, tmp_path):
    res = CliRunner().invoke(app, ["run", "--processor", "nalr-agc", "--like", str(runs["base"]), "--spl", "70",
                                   "--no-haaqinet", "--results", str(tmp_path)])
    assert res.exit_code != 0 and "drop --spl, --haaqinet/--no-haaqinet" in res.output
    res = CliRunner().invoke(app, ["run", "--processor", "nalr-agc", "--like", str(tmp_path / "nothing"),
                                   "--results", str(tmp_path)])
    assert res.exit_code != 0 and "not a run folder" in res.output
