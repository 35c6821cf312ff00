"""`bench haaqi` (pairs and manifests) and `bench ls`."""

import json
import os

import pandas as pd
import pytest
from typer.testing import CliRunner

from benchmark.cli import app

BACKEND = os.environ.get("HAAQI_BENCH_TEST_BACKEND", "fast")


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_pair_json_per_ear(pair_files):
    ref, proc, _ = pair_files
    res = _invoke("haaqi", ref, proc, "--audiogram", "N3", "--spl", "65", "--backend", BACKEND, "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert [r["ear"] for r in rows] == ["left", "right"]
    assert all(0.3 < r["haaqi"] < 1 for r in rows)


def test_identity_scores_high_and_is_reproducible(pair_files):
    ref, _, _ = pair_files
    a = json.loads(_invoke("haaqi", ref, ref, "--audiogram", "10,20,30,40,50,60,60,60",
                           "--backend", BACKEND, "--json").output)
    b = json.loads(_invoke("haaqi", ref, ref, "--audiogram", "10 20 30 40 50 60 60 60",
                           "--backend", BACKEND, "--json").output)
    assert a[0]["haaqi"] > 0.95 and a[0]["haaqi"] == b[0]["haaqi"]


def test_manifest_keeps_order_and_reports_failures(tmp_path, pair_files):
    ref, proc, mono = pair_files
    manifest = tmp_path / "pairs.csv"
    pd.DataFrame({"reference": [ref.name, "missing.wav", ref.name],
                  "processed": [proc.name, proc.name, mono.name],
                  "audiogram": ["N2", "N2", "10;20;30;40;50;60;60;60"],
                  "spl_db": ["65", "65", "70"]}).to_csv(manifest, index=False)
    out = tmp_path / "scores.csv"
    res = _invoke("haaqi", "--manifest", manifest, "--out", out, "--backend", BACKEND)
    assert res.exit_code == 0, res.output
    scores = pd.read_csv(out)
    assert scores["row"].tolist() == [0, 0, 1, 2]
    assert scores["status"].tolist() == ["ok", "ok", "error", "error"]
    assert "not found" in scores.loc[2, "error"] and "channel" in scores.loc[3, "error"]
    assert {"haaqi", "seconds", "backend"} <= set(scores.columns)
    # a worker pool gives the same scores in the same order
    out2 = tmp_path / "scores2.csv"
    assert _invoke("haaqi", "--manifest", manifest, "--out", out2, "--backend", BACKEND,
                   "--workers", "2").exit_code == 0
    pooled = pd.read_csv(out2)
    assert pooled["haaqi"].equals(scores["haaqi"]) and pooled["row"].tolist() == [0, 0, 1, 2]


@pytest.mark.parametrize("args, message", [
    (["--audiogram", "N9"], "unknown audiogram"),
    (["--spl", "200"], "out of range"),
    (["--backend", "fsat"], "did you mean 'fast'"),
])
def test_bad_pair_input(pair_files, args, message):
    ref, proc, _ = pair_files
    res = _invoke("haaqi", ref, proc, *args)
    assert res.exit_code == 2 and message in res.output


def test_silent_reference_is_an_error_not_zero(tmp_path, pair_files):
    import numpy as np
    import soundfile as sf

    ref, proc, _ = pair_files
    sf.write(tmp_path / "silent.wav", np.zeros((19200, 2)), 24000)
    res = _invoke("haaqi", tmp_path / "silent.wav", proc, "--backend", BACKEND)
    assert res.exit_code == 2 and "silent" in res.output


@pytest.mark.parametrize("what, needle", [("processors", "camfit-wdrc"), ("audiograms", "S3"),
                                          ("corpora", "builtin")])
def test_ls(what, needle):
    res = _invoke("ls", what)
    assert res.exit_code == 0 and needle in res.output


def test_ls_unknown():
    res = _invoke("ls", "procesors")
    assert res.exit_code == 2 and "did you mean 'processors'" in res.output


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; from benchmark.cli import app; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
