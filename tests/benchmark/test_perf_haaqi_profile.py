"""The fast HAAQI's profile script: the split into reference side and per processed signal, and a short run."""

from __future__ import annotations

import pytest

from benchmark.perf import haaqi_profile


def test_split_attributes_growth_to_the_processed_signals():
    one = {"ref_only": 0.5, "both": 0.3}
    many = {"ref_only": 0.5, "both": 1.7, "batch_only": 0.4}
    rows = {r["function"]: r for r in haaqi_profile.split(one, many, 8)}
    assert rows["both"]["per_processed_s"] == pytest.approx(0.2)
    assert rows["both"]["reference_s"] == pytest.approx(0.1)
    assert rows["ref_only"]["per_processed_s"] == 0 and rows["ref_only"]["reference_s"] == 0.5
    assert rows["batch_only"]["t1_s"] == 0 and rows["batch_only"]["per_processed_s"] == pytest.approx(0.4 / 7)
    assert [r["function"] for r in haaqi_profile.split(one, many, 8)][0] == "both"     # largest t(N) first


def test_a_short_profile_names_the_kernels_and_adds_up(capsys):
    res = haaqi_profile.main(["--length", "0.5", "--batch", "2", "--repeats", "3", "--top", "5", "--default-malloc"])
    names = " ".join(r["function"] for r in res["rows"])
    assert "covary_processed" in names and "gammatone_compressed_lanes" in names
    assert sum(r["per_processed_s"] for r in res["rows"]) == pytest.approx(res["per_processed_s"])
    assert sum(r["tn_s"] for r in res["rows"]) == pytest.approx(res["total_n_s"])
    assert res["total_n_s"] > res["total_1_s"] and 0 < res["per_processed_s"] < res["total_1_s"]
    assert not res["steady_allocator"] and "per processed signal" in capsys.readouterr().out
