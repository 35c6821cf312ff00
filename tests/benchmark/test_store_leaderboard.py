import os
import zlib

import numpy as np
import pandas as pd
import pytest

from benchmark import leaderboard
from benchmark.errors import BenchError
from benchmark.store import RunStore, journal_to_table, load_table


def _rows(processor, base, n_clips=6, status="ok"):
    rng = np.random.default_rng(zlib.crc32(processor.encode()))       # not hash(): salted per process
    rows = []
    for c in range(n_clips):
        for spl in (55.0, 65.0):
            for aud, sev in (("N2", "mild"), ("N4", "moderately-severe")):
                rows.append({"trial_key": f"c{c}|{aud}|left|{spl:g}|{processor}", "clip_id": f"c{c}",
                             "listener": aud, "audiogram": aud, "severity": sev, "pta_db_hl": 30.0,
                             "spl_db": spl, "processor_id": processor, "processor_label": processor,
                             "status": status, "error": "" if status == "ok" else "boom",
                             "error_stage": "" if status == "ok" else "process",
                             "haaqi": base + 0.02 * rng.standard_normal() if status == "ok" else np.nan,
                             "ear": "left", "corpus": "builtin", "run_id": "r",
                             "finished_at": "2026-01-01T00:00:00+00:00"})
    return rows


def test_ranking_orders_by_mean_and_ci_contains_mean():
    table = pd.DataFrame(_rows("good-1", 0.8) + _rows("bad-2", 0.4) + _rows("mid-3", 0.6))
    ranks = leaderboard.ranking(table)
    assert ranks["processor_id"].tolist() == ["good-1", "mid-3", "bad-2"]
    assert (ranks["ci_low"] <= ranks["mean"]).all() and (ranks["mean"] <= ranks["ci_high"]).all()
    assert (ranks["n"] == 24).all()


def test_leaderboard_is_deterministic_and_counts_errors():
    table = pd.DataFrame(_rows("good-1", 0.8) + _rows("crash-2", 0.0, n_clips=2, status="error"))
    a = leaderboard.render(table)
    b = leaderboard.render(table.sample(frac=1.0, random_state=3))
    assert a == b
    assert "| 1 | `good-1` |" in a
    assert "55 dB" in a and "moderately-severe" in a
    assert "Failed trials (8)" in a


def test_leaderboard_of_all_failed_table_is_an_error():
    with pytest.raises(BenchError, match="no trial"):
        leaderboard.render(pd.DataFrame(_rows("crash", 0.0, status="error")))


def test_journal_torn_line_is_ignored_and_last_row_wins(tmp_path):
    store = RunStore(tmp_path / "run")
    store.prepare({"config_hash": "abc"})
    store.append([{"trial_key": "a", "status": "error"}, {"trial_key": "b", "status": "ok"}])
    store.append([{"trial_key": "a", "status": "ok"}])
    store.close()
    with open(tmp_path / "run" / "journal.jsonl", "a") as fh:
        fh.write('{"trial_key": "c", "sta')  # a kill in the middle of a write
    rows = store.read_journal()
    assert [r["trial_key"] for r in rows] == ["a", "b", "a"]
    table = journal_to_table(rows)
    assert table["trial_key"].tolist() == ["a", "b"]
    assert table.set_index("trial_key").loc["a", "status"] == "ok"
    assert store.finished_keys(retry_errors=True) == {"a", "b"}
    store.write_table()
    assert len(load_table(tmp_path / "run")) == 2


def test_store_refuses_another_config(tmp_path):
    RunStore(tmp_path / "run").prepare({"config_hash": "abc"})
    with pytest.raises(BenchError, match="another configuration"):
        RunStore(tmp_path / "run").prepare({"config_hash": "xyz"})


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_results_dir(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    with pytest.raises(BenchError):
        RunStore(locked / "run").prepare({"config_hash": "abc"})


def test_results_path_under_a_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BenchError, match="cannot create results folder"):
        RunStore(blocker / "run").prepare({"config_hash": "abc"})


def test_append_after_torn_write_loses_no_row(tmp_path):
    store = RunStore(tmp_path / "run")
    store.prepare({"config_hash": "abc"})
    store.append([{"trial_key": "a", "status": "ok"}])
    store.close()
    with open(tmp_path / "run" / "journal.jsonl", "a") as fh:
        fh.write('{"trial_key": "b", "sta')
    store2 = RunStore(tmp_path / "run")
    store2.append([{"trial_key": "c", "status": "ok"}])
    store2.close()
    assert [r["trial_key"] for r in store2.read_journal()] == ["a", "c"]


def test_agreement_statistics_known_answer():
    from benchmark import agreement

    x = np.array([0.1, 0.4, 0.5, 0.9])
    s = agreement.stats(x, x)
    assert s["lcc"] == pytest.approx(1) and s["srcc"] == pytest.approx(1) and s["mse"] == 0
    s = agreement.stats(x, 1 - x)
    assert s["lcc"] == pytest.approx(-1) and s["kendall"] == pytest.approx(-1)
    assert np.isnan(agreement.stats(x[:2], x[:2])["lcc"])  # undefined for n < 3


def test_leaderboard_agreement_section_and_system_rank():
    rows = _rows("good-1", 0.8) + _rows("bad-2", 0.4) + _rows("mid-3", 0.6)
    for r in rows:
        r["haaqinet"] = r["haaqi"] * 0.9 + 0.05
        r["haaqinet_checkpoint"] = "m.pt@abc"
    table = pd.DataFrame(rows)
    text = leaderboard.render(table)
    assert "## Agreement of HAAQI-Net with HAAQI" in text
    assert "| all | 72 | 1.000 | 1.000 | 1.000 |" in text
    assert "Spearman 1.000" in text


def test_no_correlation_where_haaqi_barely_varies_nor_a_system_rank_for_two_processors():
    from benchmark import agreement

    rng = np.random.default_rng(3)
    x = 0.999 + 0.0003 * rng.standard_normal(50)                  # nalr under the nalr convention
    s = agreement.stats(x, 0.85 + 0.05 * rng.standard_normal(50))
    assert np.isnan(s["lcc"]) and np.isnan(s["srcc"]) and s["mse"] == pytest.approx(0.0222, abs=0.01)
    rows = _rows("ceiling-1", 0.999) + _rows("varied-2", 0.6)
    for r in rows:
        if r["processor_id"] == "ceiling-1":
            r["haaqi"] = 0.999 + 0.0001 * (zlib.crc32(r["trial_key"].encode()) % 3)
        r["haaqinet"] = r["haaqi"] * 0.9 + 0.05
        r["haaqinet_checkpoint"] = "m.pt@abc"
    text = leaderboard.render(pd.DataFrame(rows))
    assert "| processor ceiling-1 | 24 | – | – | – |" in text
    assert "| all | 48 | 1.000 |" in text                            # across processors HAAQI does vary
    assert "HAAQI barely varies" in text
    assert "needs at least 3 processors; this table has 2" in text and "Spearman nan" not in text


def _paired_rows(processor, clip_level, offset, noise=0.0, seed=0, label=None):
    """Trials whose HAAQI is a clip's level plus ``offset``: clips differ much more than processors."""
    rng = np.random.default_rng(seed)
    rows = []
    for c, level in enumerate(clip_level):
        for ear in ("left", "right"):
            for spl in (55.0, 65.0):
                rows.append({"trial_key": f"c{c}|N2|{ear}|{spl:g}|{processor}", "clip_id": f"c{c}",
                             "listener": "N2", "audiogram": "N2", "severity": "mild", "spl_db": spl, "ear": ear,
                             "processor_id": processor, "processor_label": label or processor, "status": "ok",
                             "error": "", "error_stage": "", "haaqi": level + offset + noise * rng.standard_normal()})
    return rows


def test_paired_difference_known_answer_and_only_trials_both_scored():
    levels = np.linspace(0.2, 0.9, 8)
    table = pd.DataFrame(_paired_rows("a", levels, 0.1) + _paired_rows("b", levels, 0.0))
    d = leaderboard.paired_difference(table, "a", "b")
    assert d["n"] == 32 and d["a_higher"] == 1.0
    assert d["mean"] == pytest.approx(0.1) and d["ci_low"] == pytest.approx(0.1) and d["ci_high"] == pytest.approx(0.1)
    failed = (table["processor_id"] == "b") & (table["clip_id"] == "c0")
    table.loc[failed, "status"], table.loc[failed, "haaqi"] = "error", np.nan
    assert leaderboard.paired_difference(table, "a", "b")["n"] == 28
    assert leaderboard.paired_difference(table, "b", "a")["mean"] == pytest.approx(-0.1)


def test_pairing_separates_processors_whose_unpaired_intervals_overlap():
    levels = np.random.default_rng(5).uniform(0.1, 0.9, 10)           # clips differ by up to 0.8
    table = pd.DataFrame(_paired_rows("better", levels, 0.03, noise=0.01, seed=1)
                         + _paired_rows("worse", levels, 0.0, noise=0.01, seed=2))
    ranks = leaderboard.ranking(table).set_index("processor_id")
    assert ranks.loc["worse", "ci_high"] > ranks.loc["better", "ci_low"]      # unpaired: overlapping
    d = leaderboard.paired_difference(table, "better", "worse")
    assert 0.0 < d["ci_low"] < 0.03 < d["ci_high"]
    text = leaderboard.render(table)
    assert "## Paired differences" in text and "| `better` | `worse` | +0.03" in text


def test_against_compares_every_processor_with_one_and_names_are_checked():
    levels = np.linspace(0.2, 0.9, 4)
    table = pd.DataFrame(_paired_rows("x-1", levels, 0.1, label="x") + _paired_rows("y-1", levels, 0.0, label="y")
                         + _paired_rows("z-1", levels, -0.1, label="z"))
    text = leaderboard.render(table, against="y")
    section = text.split("## Paired differences")[1].split("\n## ")[0]
    assert "| `x` | `y` | +0.100 |" in section and "| `z` | `y` | -0.100 |" in section
    assert "\n| `y` |" not in section          # not against itself
    assert leaderboard.render(table, against="y-1") == text
    with pytest.raises(BenchError, match="no processor 'w'.*x, y, z"):
        leaderboard.render(table, against="w")
    table = pd.concat([table, pd.DataFrame(_paired_rows("y-2", levels, 0.05, label="y"))])
    with pytest.raises(BenchError, match="names 2 configurations"):
        leaderboard.render(table, against="y")
    single = pd.DataFrame(_paired_rows("x-1", levels, 0.1))
    assert "Paired differences" not in leaderboard.render(single)
