"""End to end through the CLI: a tiny sweep -> table, leaderboard, plots; resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from benchmark.cli import app

BACKEND = os.environ.get("HAAQI_BENCH_TEST_BACKEND", "fast")


def _run(*args):
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return result


def test_tiny_sweep_end_to_end(tmp_path, audio_folder):
    res = _run("run", "--processor", "unprocessed,nalr", "--spl", "65", "--audiograms", "N2,S2",
               "--corpus", str(audio_folder), "--limit", "2", "--excerpt-s", "1", "--workers", "0",
               "--haaqi-backend", BACKEND, "--results", str(tmp_path / "results"), "--run-id", "tiny")
    assert res.exit_code == 0, res.output
    assert "trials 16/16 (100 %)" in res.output          # progress as a plain line: the output is not a terminal
    run_dir = tmp_path / "results" / "tiny"
    table = pd.read_parquet(run_dir / "scores.parquet")
    # 2 clips x 2 listeners x 1 SPL x 2 processors x 2 ears
    assert len(table) == 16 and table["trial_key"].is_unique
    assert (table["status"] == "ok").all()
    assert table["haaqi"].between(0, 1).all()
    for col in ("git_sha", "config_hash", "corpus_manifest_hash", "seed_haaqi", "reference",
                "haaqi_backend_version", "versions"):
        assert table[col].notna().all(), col
    # NAL-R helps hearing-impaired listeners relative to no aid
    means = table.groupby("processor")["haaqi"].mean()
    assert means["nalr"] > means["unprocessed"]
    board = (run_dir / "leaderboard.md").read_text()
    assert "| 1 | `nalr` |" in board and "65 dB" in board
    assert (run_dir / "plots" / "haaqi_vs_spl.png").stat().st_size > 1000
    assert (run_dir / "plots" / "heatmap_processor_audiogram.png").stat().st_size > 1000
    # HAAQI-Net beside HAAQI, with an agreement section and scatter plot
    assert table["haaqinet"].between(0, 1).all() and (table["haaqinet_error"] == "").all()
    assert table["haaqinet_checkpoint"].str.startswith("haaqinet-auditory-ensemble.pt@").all()   # the default
    assert "## Agreement of HAAQI-Net with HAAQI" in board and "System level" in board
    assert (run_dir / "plots" / "agreement_haaqinet_vs_haaqi.png").stat().st_size > 1000
    # rerun: resumes, nothing new, bit-identical table
    res2 = _run("run", "--processor", "unprocessed,nalr", "--spl", "65", "--audiograms", "N2,S2",
                "--corpus", str(audio_folder), "--limit", "2", "--excerpt-s", "1", "--workers", "0",
                "--haaqi-backend", BACKEND, "--results", str(tmp_path / "results"), "--run-id", "tiny")
    assert res2.exit_code == 0
    again = pd.read_parquet(run_dir / "scores.parquet")
    assert again["haaqi"].tolist() == table["haaqi"].tolist()
    # publish
    out = tmp_path / "lb" / "board.md"
    assert _run("leaderboard", str(run_dir), "--out", str(out)).exit_code == 0
    assert "bench leaderboard" in out.read_text()


def test_pool_and_serial_give_identical_scores(tmp_path, audio_folder):
    common = ["run", "--processor", "nalr", "--spl", "70", "--audiograms", "N3", "--corpus",
              str(audio_folder), "--limit", "2", "--excerpt-s", "1", "--haaqi-backend", BACKEND,
              "--results", str(tmp_path)]
    assert _run(*common, "--workers", "0", "--run-id", "serial").exit_code == 0
    assert _run(*common, "--workers", "2", "--run-id", "pool").exit_code == 0
    a = pd.read_parquet(tmp_path / "serial" / "scores.parquet")
    b = pd.read_parquet(tmp_path / "pool" / "scores.parquet")
    assert a["trial_key"].tolist() == b["trial_key"].tolist()
    assert a["haaqi"].tolist() == b["haaqi"].tolist()


def test_crashing_plugin_becomes_error_rows(tmp_path, audio_folder):
    plugin = tmp_path / "bad.py"
    plugin.write_text(
        "from dataclasses import dataclass\n"
        "from processors.base import Processor\n"
        "@dataclass(frozen=True)\n"
        "class Crash(Processor):\n"
        "    name = 'crash'\n"
        "    def process(self, signal, presentation, *, rng):\n"
        "        raise RuntimeError('kaboom')\n"
        "@dataclass(frozen=True)\n"
        "class NaNs(Processor):\n"
        "    name = 'nans'\n"
        "    def process(self, signal, presentation, *, rng):\n"
        "        return signal * float('nan')\n")
    res = _run("run", "--processor", f"{plugin}:Crash,{plugin}:NaNs,unprocessed", "--spl", "65",
               "--audiograms", "N2", "--corpus", str(audio_folder), "--limit", "1", "--excerpt-s", "1",
               "--workers", "0", "--haaqi-backend", BACKEND, "--results", str(tmp_path / "r"),
               "--run-id", "x")
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(tmp_path / "r" / "x" / "scores.parquet")
    bad = table[table["processor"] != "unprocessed"]
    assert (bad["status"] == "error").all() and bad["haaqi"].isna().all()
    assert bad["error"].str.contains("kaboom").any() and bad["error"].str.contains("NaN").any()
    assert (table[table["processor"] == "unprocessed"]["status"] == "ok").all()


@pytest.mark.parametrize("args, message", [
    (["--processor", "nalrr"], "did you mean 'nalr'"),
    (["--spl", "150"], "out of range"),
    (["--audiograms", "N33"], "did you mean"),
    (["--param", "nalr.nope=1"], "no parameter"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, audio_folder, args, message):
    base = {"--processor": "nalr", "--spl": "65", "--audiograms": "N2"}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    flat = [x for kv in base.items() for x in kv]
    if "--param" in base:
        flat += []
    res = CliRunner().invoke(app, ["run", *flat, "--corpus", str(audio_folder), "--workers", "0",
                                   "--results", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert message in res.output
    assert not (tmp_path / "r").exists()


def test_silent_and_corrupt_files_are_skipped_not_scored(tmp_path, audio_folder):
    import numpy as np

    sf.write(audio_folder / "silent.wav", np.zeros((24000, 2)), 24000)
    (audio_folder / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    res = _run("run", "--processor", "unprocessed", "--spl", "65", "--audiograms", "N2",
               "--corpus", str(audio_folder), "--excerpt-s", "1", "--workers", "0",
               "--haaqi-backend", BACKEND, "--results", str(tmp_path / "r"), "--run-id", "x")
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(tmp_path / "r" / "x" / "scores.parquet")
    assert not table["clip_id"].str.contains("silent|corrupt").any()
    meta = json.loads((tmp_path / "r" / "x" / "run.json").read_text())
    assert len(meta["corpus"]["skipped"]) == 2


def test_resume_after_sigkill_gives_one_row_per_trial(tmp_path, audio_folder):
    cmd = [sys.executable, "-m", "benchmark.cli", "run", "--processor", "unprocessed,nalr",
           "--spl", "60,70", "--audiograms", "N2,N4", "--corpus", str(audio_folder),
           "--excerpt-s", "1", "--workers", "1", "--haaqi-backend", BACKEND,
           "--results", str(tmp_path / "r"), "--run-id", "k"]
    journal = tmp_path / "r" / "k" / "journal.jsonl"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if journal.exists() and journal.read_text().count("\n") >= 4:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = journal.read_text().count("\n")
    assert 4 <= n_before < 48, "the kill must land mid-sweep"
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    table = pd.read_parquet(tmp_path / "r" / "k" / "scores.parquet")
    # 3 clips x 2 listeners x 2 SPL x 2 processors x 2 ears
    assert len(table) == 48 and table["trial_key"].is_unique
    assert (table["status"] == "ok").all()
    keys = [json.loads(line)["trial_key"] for line in journal.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 48, "resume must not redo finished trials"


def test_grouped_scoring_equals_one_processor_at_a_time(tmp_path, audio_folder):
    """score_many over processors gives the same rows as separate single-processor runs."""
    common = ["--spl", "65", "--audiograms", "N3", "--corpus", str(audio_folder), "--limit", "1",
              "--excerpt-s", "1", "--workers", "0", "--haaqi-backend", BACKEND,
              "--results", str(tmp_path)]
    assert _run("run", "--processor", "unprocessed,nalr-agc", *common, "--run-id", "both").exit_code == 0
    assert _run("run", "--processor", "nalr-agc", *common, "--run-id", "one").exit_code == 0
    both = pd.read_parquet(tmp_path / "both" / "scores.parquet").set_index("trial_key")
    one = pd.read_parquet(tmp_path / "one" / "scores.parquet").set_index("trial_key")
    assert both.loc[one.index, "haaqi"].tolist() == one["haaqi"].tolist()


def test_pyclarity_backend_without_haaqinet(tmp_path, audio_folder):
    res = _run("run", "--processor", "nalr", "--spl", "65", "--audiograms", "N2", "--corpus",
               str(audio_folder), "--limit", "1", "--excerpt-s", "1", "--workers", "0", "--no-haaqinet",
               "--haaqi-backend", "pyclarity", "--results", str(tmp_path), "--run-id", "p")
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(tmp_path / "p" / "scores.parquet")
    assert (table["haaqi_backend_version"] == "pyclarity-0.9.0").all()
    assert "haaqinet" not in table
    assert "Agreement" not in (tmp_path / "p" / "leaderboard.md").read_text()


def test_missing_haaqinet_checkpoint_fails_before_work(tmp_path, audio_folder):
    res = CliRunner().invoke(app, ["run", "--processor", "nalr", "--spl", "65", "--audiograms", "N2",
                                   "--corpus", str(audio_folder), "--haaqinet-checkpoint",
                                   str(tmp_path / "nope.pt"), "--results", str(tmp_path / "r")])
    assert res.exit_code == 2 and "checkpoint not found" in res.output
    assert not (tmp_path / "r").exists()


def test_clips_option_selects_clips_in_order(tmp_path, audio_folder):
    from benchmark.corpus import load_corpus

    ids = [c.clip_id for c in load_corpus(str(audio_folder), excerpt_s=1.0).clips]
    res = _run("run", "--processor", "unprocessed", "--spl", "65", "--audiograms", "N2",
               "--corpus", str(audio_folder), "--clips", f"{ids[2]},{ids[0]}", "--excerpt-s", "1",
               "--workers", "0", "--no-haaqinet", "--results", str(tmp_path / "results"), "--run-id", "c")
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(tmp_path / "results" / "c" / "scores.parquet")
    assert sorted(set(table["clip_id"])) == sorted([ids[2], ids[0]]) and len(table) == 4
    bad = CliRunner().invoke(app, ["run", "--processor", "nalr", "--corpus", str(audio_folder),
                                   "--clips", ids[0] + "x", "--workers", "0", "--no-haaqinet",
                                   "--results", str(tmp_path / "r")])
    assert bad.exit_code == 2 and "did you mean" in bad.output
    assert not (tmp_path / "r").exists()


def test_run_command_is_recorded_and_shown_on_the_leaderboard(tmp_path, audio_folder, monkeypatch):
    argv = ["bench", "run", "--processor", "nalr", "--corpus", str(audio_folder), "--limit", "1",
            "--excerpt-s", "1", "--workers", "0", "--no-haaqinet", "--audiograms", "N2",
            "--results", str(tmp_path / "results"), "--run-id", "cmd"]
    monkeypatch.setattr(sys, "argv", ["/usr/bin/bench", *argv[1:]])
    assert _run(*argv[1:]).exit_code == 0
    run_dir = tmp_path / "results" / "cmd"
    assert json.loads((run_dir / "run.json").read_text())["command"].startswith("bench run --processor nalr")
    out = tmp_path / "board.md"
    assert _run("leaderboard", str(run_dir), "--out", str(out)).exit_code == 0
    text = out.read_text()
    assert text.index("bench run --processor nalr") < text.index("bench leaderboard")


def test_student_checkpoint_by_name(tmp_path, audio_folder):
    res = _run("run", "--processor", "nalr", "--corpus", str(audio_folder), "--limit", "1", "--excerpt-s", "1",
               "--workers", "0", "--audiograms", "N2", "--haaqinet-checkpoint", "student",
               "--results", str(tmp_path / "results"), "--run-id", "s")
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(tmp_path / "results" / "s" / "scores.parquet")
    assert table["haaqinet_checkpoint"].str.startswith("haaqinet-auditory-student.pt@").all()
    assert table["haaqinet"].between(0, 1).all()


@pytest.mark.parametrize("column, value, scorer_args, hint", [
    ("haaqi_backend_version", "older-version", ["--no-haaqinet"], "start a new run"),
    ("haaqinet_checkpoint", "older.pt@0123456789ab", ["--haaqinet-checkpoint", "student"], "bench rescore"),
])
def test_resume_refuses_rows_scored_by_another_scorer(tmp_path, audio_folder, column, value, scorer_args, hint):
    args = ["run", "--processor", "nalr", "--corpus", str(audio_folder), "--limit", "1", "--excerpt-s", "1",
            "--workers", "0", "--audiograms", "N2", *scorer_args, "--results", str(tmp_path / "r"), "--run-id", "v"]
    assert _run(*args).exit_code == 0
    journal = tmp_path / "r" / "v" / "journal.jsonl"
    rows = [json.loads(line) for line in journal.read_text().splitlines()]
    rows = [{**r, column: value} for r in rows[:-1]]  # one trial left to run
    journal.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and value in res.output and hint in res.output, res.output
    assert len(journal.read_text().splitlines()) == len(rows)  # nothing written
