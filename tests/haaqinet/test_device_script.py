"""``benchmark.perf.haaqinet_device``: the CPU-against-accelerator comparison, run here with the CPU on both sides."""

import json

import pytest


def test_the_device_comparison_runs_and_a_device_against_itself_agrees(tmp_path):
    from benchmark.perf.haaqinet_device import main

    out = tmp_path / "device.json"
    res = main(["--device", "cpu", "--checkpoint", "student", "--clips", "3", "--length", "1", "--batch", "2",
                "--repeats", "1", "--json", str(out)])
    row = res["checkpoints"]["student"]
    assert row["max_abs_diff"] == 0.0 and row["cpu_clips_per_s"] > 0 and row["device_clips_per_s"] > 0
    assert json.loads(out.read_text())["checkpoints"]["student"]["max_abs_diff"] == 0.0


def test_a_missing_accelerator_is_a_clear_exit():
    import torch

    from benchmark.perf.haaqinet_device import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit, match="no CUDA device"):
        main(["--device", "cuda", "--checkpoint", "student"])
