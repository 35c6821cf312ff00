"""``bench rescore``: a finished run re-predicted with another HAAQI-Net checkpoint, HAAQI kept."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.errors import BenchError
from benchmark.rescore import rescore_haaqinet
from benchmark.sweep import SweepConfig


def _sweep(tmp_path, audio_folder, run_id, *extra):
    args = ["run", "--processor", "unprocessed,nalr", "--spl", "65", "--audiograms", "N2", "--corpus",
            str(audio_folder), "--limit", "2", "--excerpt-s", "1", "--workers", "0",
            "--results", str(tmp_path / "results"), "--run-id", run_id, *extra]
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return tmp_path / "results" / run_id


def _journal(run_dir):
    return [json.loads(line) for line in (run_dir / "journal.jsonl").read_text().splitlines()]


def test_rescore_equals_a_run_with_that_checkpoint_and_keeps_haaqi(tmp_path, audio_folder):
    run_dir = _sweep(tmp_path, audio_folder, "r")
    direct = _sweep(tmp_path, audio_folder, "direct", "--haaqinet-checkpoint", "student")
    before = pd.read_parquet(run_dir / "scores.parquet")
    old_rows = _journal(run_dir)
    res = CliRunner().invoke(app, ["rescore", "r", "--haaqinet-checkpoint", "student", "--workers", "0",
                                   "--results", str(tmp_path / "results")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    after = pd.read_parquet(run_dir / "scores.parquet").set_index("trial_key")
    want = pd.read_parquet(direct / "scores.parquet").set_index("trial_key")
    before = before.set_index("trial_key")
    assert after["haaqinet_checkpoint"].str.startswith("haaqinet-auditory-student.pt@").all()
    assert after["haaqinet"].tolist() == want.loc[after.index, "haaqinet"].tolist()
    assert not after["haaqinet"].equals(before.loc[after.index, "haaqinet"])
    for col in ("haaqi", "cep_high", "seconds", "git_sha", "finished_at"):
        assert after[col].tolist() == before.loc[after.index, col].tolist(), col
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["haaqinet_checkpoint"].startswith("haaqinet-auditory-student.pt@")
    kept = run_dir / meta["rescored"][-1]["journal_before"]
    assert [json.loads(line) for line in kept.read_text().splitlines()] == old_rows
    assert not list(run_dir.glob("rescore-*.jsonl"))
    board = (run_dir / "leaderboard.md").read_text()
    assert "## Agreement of HAAQI-Net with HAAQI" in board
    # the board says how its table was made: the re-prediction and the command that repeats it
    stamp = meta["rescored"][-1]["at"]
    again = f"bench rescore r --results {tmp_path / 'results'} --haaqinet-checkpoint student"
    for text in (board, _leaderboard(run_dir)):
        block = text.split("```")[1]
        assert block.index(f"# HAAQI-Net re-predicted at {stamp}") < block.index(again)
    assert "--title 'Two words'" in _leaderboard(run_dir)


def _leaderboard(run_dir):
    out = run_dir / "board-again.md"
    res = CliRunner().invoke(app, ["leaderboard", str(run_dir), "--out", str(out), "--title", "Two words"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out.read_text()


def test_rescore_refuses_changed_audio_and_leaves_failures_alone(tmp_path, audio_folder):
    run_dir = _sweep(tmp_path, audio_folder, "r")
    rows = _journal(run_dir)
    rows[0]["output_db_spl"] += 0.5                      # as if the processor had changed since the run
    rows[1].update(status="error", error_stage="process", error="RuntimeError: boom", haaqi=None)
    (run_dir / "journal.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = rescore_haaqinet(run_dir, "default", workers=0)
    new = {r["trial_key"]: r for r in _journal(run_dir)}
    assert new[rows[0]["trial_key"]]["haaqinet"] is None
    assert "differs from the run's" in new[rows[0]["trial_key"]]["haaqinet_error"]
    assert new[rows[1]["trial_key"]] == rows[1]
    assert summary["n_failed"] == 1 and summary["n_unchanged"] == 1
    assert summary["n_rescored"] == len(rows) - 2


def test_an_interrupted_rescore_resumes_from_its_partial_file(tmp_path, audio_folder):
    run_dir = _sweep(tmp_path, audio_folder, "r")
    rows = _journal(run_dir)
    from benchmark.runner import _checkpoint_provenance
    from benchmark.rescore import _safe

    side = run_dir / f"rescore-{_safe(_checkpoint_provenance('default'))}.jsonl"
    first = rows[0]
    side.write_text(json.dumps({"trial_key": first["trial_key"], "status": "ok", "error": "",
                                "output_db_spl": first["output_db_spl"], "haaqinet": 0.123,
                                "haaqinet_error": "", "haaqinet_s": 0.0}) + "\n" + '{"trial_key": "torn')
    rescore_haaqinet(run_dir, "default", workers=0)
    new = {r["trial_key"]: r for r in _journal(run_dir)}
    assert new[first["trial_key"]]["haaqinet"] == 0.123    # taken from the partial file, not recomputed
    assert new[rows[2]["trial_key"]]["haaqinet"] == rows[2]["haaqinet"]   # same checkpoint: same value


def test_rescore_needs_a_run_with_results(tmp_path):
    with pytest.raises(BenchError, match="not a run folder"):
        rescore_haaqinet(tmp_path / "nothing", "default", workers=0)


def test_config_round_trips_through_run_json(tmp_path, audio_folder):
    run_dir = _sweep(tmp_path, audio_folder, "noisy", "--scenario", "clean,noisy", "--noise", "pink",
                     "--snr", "5", "--param", "nalr.nfir_taps=200")
    meta = json.loads((run_dir / "run.json").read_text())
    assert SweepConfig.from_dict(meta["config"]).config_hash == meta["config_hash"]
    with pytest.raises(BenchError, match="not a sweep configuration"):
        SweepConfig.from_dict({"processors": []})


def test_made_by_lists_the_run_then_each_re_prediction():
    from pathlib import Path

    from benchmark.merge import made_by

    meta = {"command": "bench run --processor nalr",
            "rescored": [{"at": "T1", "haaqinet_checkpoint": "a.pt@1", "git_sha": "0123456789abcdef",
                          "journal_before": "j1.jsonl"},
                         {"at": "T2", "haaqinet_checkpoint": "b.pt@2", "git_sha": "fedcba9876543210",
                          "journal_before": "j2.jsonl", "requested": "student"}]}
    assert made_by(Path("results/x"), meta) == [
        "bench run --processor nalr",
        "# HAAQI-Net re-predicted at T1 with a.pt@1 (git 0123456789ab); the earlier journal is j1.jsonl",
        "# HAAQI-Net re-predicted at T2 with b.pt@2 (git fedcba987654); the earlier journal is j2.jsonl",
        "bench rescore x --haaqinet-checkpoint student"]
    assert made_by(Path("elsewhere/x"), meta)[-1] == "bench rescore x --results elsewhere --haaqinet-checkpoint student"
    assert made_by(Path("results/x"), {}) == []
