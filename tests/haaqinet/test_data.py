"""Training data: audiogram generator, recipe determinism, splits, resumable labelling, regeneration."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmark.audiogram import SEVERITY_ORDER
from benchmark.errors import BenchError
from haaqinet import audiograms, data


def _toy(tmp_path, n_items=8, **kw):
    folder = tmp_path / "toy"
    sources = data.synthetic_sources(folder, n=4, seconds=1.5)
    recipe = data.new_recipe(n_items=n_items, sources=sources, seed=3, item_s=1.0, conditions_per_group=4,
                             n_listeners=8, **kw)
    data.write_recipe(folder, recipe)
    return folder, recipe


def _grow_cli(data_folder, out, *args):
    """``bench haaqinet grow --data data_folder --out out ARGS`` through the CLI; the typer result."""
    from typer.testing import CliRunner

    from haaqinet.cli import app

    return CliRunner().invoke(app, ["grow", "--data", str(data_folder), "--out", str(out), *args])


def test_generated_listeners_are_deterministic_realistic_and_varied():
    a = audiograms.generate_listeners(300, seed=1)
    b = audiograms.generate_listeners(300, seed=1)
    assert a == b
    assert audiograms.generate_listener(5, seed=2) != a[5]
    levels = np.array([ear.levels_db_hl for l in a for ear in (l.left, l.right)])
    assert levels.shape == (600, 8)
    assert levels.min() >= -10 and levels.max() <= 120 and np.all(levels % 5 == 0)
    grades = {ear.severity for l in a for ear in (l.left, l.right)}
    assert grades == set(SEVERITY_ORDER)
    asym = [abs(l.left.pta_db_hl - l.right.pta_db_hl) for l in a]
    assert 0.1 < np.mean(np.array(asym) >= 12.5) < 0.35


def test_assign_splits_fills_every_split_and_keeps_training():
    for n in (3, 10, 200):
        splits = data.assign_splits(n, 0, 1, {"test": 0.15, "val": 0.1})
        assert splits.count("train") >= 1
        if n >= 3:
            assert {"test", "val"} <= set(splits)
    assert data.assign_splits(200, 0, 1, {"test": 0.15, "val": 0.1}).count("test") == 30


def test_groups_are_deterministic_and_splits_are_honest(tmp_path):
    folder, recipe = _toy(tmp_path, n_items=400)
    pool = data.pools(recipe)
    rows = [r for g in range(recipe["n_groups"]) for r in data.group_items(recipe, g, pool)]
    assert rows == [r for g in range(recipe["n_groups"]) for r in data.group_items(recipe, g, pool)]
    assert {r["split"] for r in rows} == set(data.SPLITS)
    src_split = {s["source_id"]: s["split"] for s in recipe["sources"]}
    train_auds = {r["audiogram"] for r in rows if r["split"] == "train"}
    for r in rows:
        if r["split"] in ("test", "unseen-conditions"):
            assert src_split[r["source_id"]] == "test"
            assert r["audiogram"] not in train_auds
        else:
            assert src_split[r["source_id"]] == r["split"]
    held = set(recipe["held_out_kinds"])
    for r in rows:
        if r["split"] == "unseen-conditions":
            assert held & set(r["kinds"])
        else:
            assert not held & set(r["kinds"])
    lo, hi = recipe["spl_range_db"]
    assert all(lo <= r["spl_db"] <= hi for r in rows)
    json.dumps(rows)  # rows are JSON-ready


def test_conditions_cover_aids_and_clean_nalr():
    conds = [data.sample_condition(np.random.default_rng(i)) for i in range(400)]
    assert {c["aid"] for c in conds} == set(data.AIDS)
    names = [data.condition_name(c) for c in conds]
    assert 0.03 < names.count("nalr") / len(names) < 0.15
    assert max(len(c["pre"]) for c in conds) == 3


def test_make_data_is_resumable_and_regenerates_the_same_audio(tmp_path):
    folder, recipe = _toy(tmp_path, n_items=8)
    first = data.make_data(folder, workers=1, max_seconds=0.0, cache_inputs=True)  # stops after one group
    assert first["items"] == 4
    second = data.make_data(folder, workers=1, cache_inputs=True)
    assert second["items"] == 8 and second["ok"] == 8
    assert len(data.read_journal(folder)) == 8  # nothing labelled twice
    df = data.load_labels(folder)
    assert df["haaqi"].between(0, 1).all()
    clean = df[df["condition"] == "nalr"]
    assert (clean["haaqi"] > 0.99).all()
    cached = data.model_inputs(folder, df)
    for f in (folder / "cache" / "wave16k").glob("*.npy"):
        f.unlink()
    regenerated = data.model_inputs(folder, df)
    np.testing.assert_allclose(regenerated, cached, atol=1e-6)
    assert cached.shape == (8, 16000)


def test_changed_source_and_wrong_version_are_refused(tmp_path):
    folder, recipe = _toy(tmp_path)
    path = folder / "sources" / "synthetic-0.npy"
    x = np.load(path)
    x[0] += 1
    np.save(path, x)
    with pytest.raises(BenchError, match="checksum"):
        data.load_source(folder, recipe["sources"][0])
    data.write_recipe(folder, {**recipe, "data_version": 0})
    with pytest.raises(BenchError, match="data version"):
        data.read_recipe(folder)


def test_histogram():
    h = data.histogram([0.0, 0.05, 0.5, 1.0], bins=10)
    assert [c for _, _, c in h] == [2, 0, 0, 0, 0, 1, 0, 0, 0, 1]


def test_render_sources_in_parallel_gives_the_serial_sources(tmp_path):
    serial = data.render_sources(tmp_path / "serial", n_pieces=3, workers=1)
    parallel = data.render_sources(tmp_path / "parallel", n_pieces=3, workers=2)
    assert len(serial) == 3
    assert [(r["source_id"], r["crc32"]) for r in parallel] == [(r["source_id"], r["crc32"]) for r in serial]
    for r in serial:
        assert (tmp_path / "parallel" / "sources" / f"{r['source_id']}.npy").is_file()
    # missing sources are rendered again from the recipe's arrangements, alone or in parallel, bit for bit
    import zlib
    recipe = {"sources": serial}
    for workers, folder in ((1, tmp_path / "again-1"), (2, tmp_path / "again-2")):
        assert data.rerender_missing(folder, recipe, workers=workers) == 3
        assert data.rerender_missing(folder, recipe, workers=workers) == 0      # nothing missing now
        for r in serial:
            pcm = np.load(folder / "sources" / f"{r['source_id']}.npy")
            assert zlib.crc32(pcm.tobytes()) == r["crc32"]


def test_denoiser_aids_change_only_the_aid_of_the_groups_they_cover(tmp_path):
    folder, recipe = _toy(tmp_path, n_items=400)
    with_d = {**recipe, "denoiser_aids": data.denoiser_spec(0.5, from_group=50)}
    pool = data.pools(recipe)
    before = [r for g in range(100) for r in data.group_items(recipe, g, pool)]
    after = [r for g in range(100) for r in data.group_items(with_d, g, pool)]
    changed = [(b, a) for b, a in zip(before, after) if b != a]
    assert all(b["group"] >= 50 for b, _ in changed)
    assert {a["aid"] for _, a in changed} <= set(data.DENOISER_AIDS)
    assert 0.3 < len(changed) / 200 < 0.7
    for b, a in changed:  # same excerpt, ear, level, degradations and seeds: only the aid differs
        assert {k: v for k, v in a.items() if k not in ("aid", "steps", "condition")} == \
               {k: v for k, v in b.items() if k not in ("aid", "steps", "condition")}
        assert a["steps"] == {**b["steps"], "aid": a["aid"]}
    assert data.new_recipe(n_items=4, sources=recipe["sources"], denoiser_share=0.25)["denoiser_aids"]["share"] == 0.25
    assert "denoiser_aids" not in recipe
    with pytest.raises(BenchError, match="denoiser share"):
        data.denoiser_spec(1.5)


def test_a_denoiser_item_is_synthesised_and_labelled(tmp_path):
    folder, recipe = _toy(tmp_path, n_items=4, denoiser_share=1.0)
    data.write_recipe(folder, {**recipe, "denoiser_aids": {**recipe["denoiser_aids"],
                                                           "aids": {"mmse-stsa>nalr": 1.0}}})
    summary = data.make_data(folder, workers=1)
    df = data.load_labels(folder)
    assert summary["ok"] == 4 and set(df["aid"]) == {"mmse-stsa>nalr"}
    assert df["haaqi"].between(0, 1).all()


def test_level_copies_add_training_items_at_other_levels_only(tmp_path):
    folder, recipe = _toy(tmp_path, n_items=400)
    grown = {**recipe, "level_copies": data.level_copies_spec(2, from_group=10, to_group=60, min_step_db=12)}
    pool = data.pools(recipe)
    for g in range(100):
        before, after = data.group_items(recipe, g, pool), data.group_items(grown, g, pool)
        assert after[:len(before)] == before                       # the drawn items never change
        copies = after[len(before):]
        if before[0]["split"] != "train" or not 10 <= g < 60:
            assert copies == []
            continue
        assert len(copies) == 2 * len(before)
        for c, rows in ((1, copies[:4]), (2, copies[4:])):
            assert [r["item_id"] for r in rows] == [f"{b['item_id']}L{c}" for b in before]
            assert len({r["spl_db"] for r in rows}) == 1
            assert abs(rows[0]["spl_db"] - before[0]["spl_db"]) >= 12
            assert 45 <= rows[0]["spl_db"] <= 85
            for r, b in zip(rows, before):   # the same audio (steps, seeds), only the level differs
                drop = ("item_id", "spl_db", "level_copy")
                assert {k: v for k, v in r.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}
    assert data.group_items(grown, 20, pool) == data.group_items(grown, 20, pool)
    assert data.new_recipe(n_items=4, sources=recipe["sources"], level_copies=1)["level_copies"]["copies"] == 1
    with pytest.raises(BenchError, match="level copies"):
        data.level_copies_spec(-1)


def test_edge_copies_judge_training_items_just_outside_the_level_range(tmp_path):
    folder, recipe = _toy(tmp_path, n_items=400)
    grown = data.grown_recipe({**recipe, "level_copies": data.level_copies_spec(1, to_group=50)},
                              edge_copies=1, edge_copies_to=60)
    pool = data.pools(recipe)
    levels = []
    for g in range(100):
        plain = data.group_items({**recipe, "level_copies": data.level_copies_spec(1, to_group=50)}, g, pool)
        after = data.group_items(grown, g, pool)
        assert after[:len(plain)] == plain                        # drawn items and level copies never change
        copies = after[len(plain):]
        if plain[0]["split"] != "train" or g >= 60:
            assert copies == []
            continue
        assert [r["item_id"] for r in copies] == [f"{b['item_id']}E1" for b in plain[:4]]
        level = copies[0]["spl_db"]
        assert len({r["spl_db"] for r in copies}) == 1 and (35 <= level < 45 or 85 < level <= 95)
        levels.append(level)
        drop = ("item_id", "spl_db", "edge_copy")
        assert [{k: v for k, v in r.items() if k not in drop} for r in copies] == \
            [{k: v for k, v in b.items() if k not in drop} for b in plain[:4]]
    assert any(v < 45 for v in levels) and any(v > 85 for v in levels)
    with pytest.raises(BenchError, match="may only add"):
        data.grown_recipe(grown, edge_copies=1, edge_copies_to=30)
    with pytest.raises(BenchError, match="edge copies must be"):
        data.edge_copies_spec(0)


def test_a_grown_recipe_labels_only_its_new_items_each_at_its_own_level(tmp_path):
    folder, recipe = _toy(tmp_path, n_items=8)
    data.make_data(folder, workers=1)
    before = {r["item_id"]: r for r in data.read_journal(folder)}
    train_groups = sorted({r["group"] for r in before.values() if r["split"] == "train"})
    assert train_groups, "the toy recipe has a training group"
    data.write_recipe(folder, {**recipe, "level_copies": data.level_copies_spec(1, min_step_db=20)})
    summary = data.make_data(folder, workers=1)
    journal = data.read_journal(folder)
    assert [r for r in journal if r["item_id"] in before] == list(before.values())   # nothing relabelled
    copies = [r for r in journal if r["item_id"] not in before]
    assert len(copies) == 4 * len(train_groups) and summary["ok"] == 8 + len(copies)
    # each copy carries the label of its own level: the same item labelled alone at that level agrees
    copy = copies[0]
    alone = data.label_group([{**before[copy["item_id"][:-2]], "spl_db": copy["spl_db"]}], folder,
                             data.read_recipe(folder))[0]
    assert copy["haaqi"] == alone["haaqi"] and copy["level1_db_spl"] == alone["level1_db_spl"]
    assert copy["haaqi"] != before[copy["item_id"][:-2]]["haaqi"]


def test_grow_keeps_every_labelled_item_and_refuses_changes(tmp_path):
    folder, recipe = _toy(tmp_path, n_items=8)
    data.make_data(folder, workers=1, cache_inputs=True)
    before = data.read_journal(folder)
    out = tmp_path / "grown"
    res = _grow_cli(folder, out, "--groups", "4", "--denoiser-share", "1.0", "--level-copies", "1")
    assert res.exit_code == 0, res.output
    grown = data.read_recipe(out)
    assert grown["n_groups"] == 4 and grown["denoiser_aids"]["from_group"] == 2
    assert grown["level_copies"]["copies"] == 1 and grown["level_copies"]["to_group"] == 4
    assert data.read_journal(out) == before and data.read_recipe(folder) == recipe     # the source is untouched
    assert len(list((out / "cache" / "wave16k").glob("*.npy"))) == 8
    summary = data.make_data(out, workers=1)
    journal = data.read_journal(out)
    assert journal[:8] == before and summary["ok"] == len(journal) > 8
    assert {r["aid"] for r in journal if r["group"] >= 2} <= set(data.DENOISER_AIDS)
    for args, message in ((["--groups", "1"], "keeps its 2 groups"),
                          (["--denoiser-share", "0.5"], "new groups only")):
        res = _grow_cli(folder, tmp_path / "x", *args)
        assert res.exit_code == 2 and message in res.output, res.output
    res = _grow_cli(out, tmp_path / "y", "--level-copies", "1", "--level-copies-to", "2")
    assert res.exit_code == 2 and "may only add copies or groups" in res.output
    res = _grow_cli(folder, out)
    assert res.exit_code == 2 and "not empty" in res.output


def test_new_arrangements_and_new_pieces_feed_only_new_training_groups(tmp_path):
    import zlib

    folder = tmp_path / "m21"
    sources = data.render_sources(folder, n_pieces=3, source_s=2.0)
    recipe = data.new_recipe(n_items=8, sources=sources, seed=3, item_s=1.0, n_listeners=8)
    data.write_recipe(folder, recipe)
    recipe = data.read_recipe(folder)
    data.make_data(folder, workers=1)
    before = data.read_journal(folder)
    out = tmp_path / "arranged"
    res = _grow_cli(folder, out, "--groups", "5", "--arrangements", "2", "--pieces", "2", "--workers", "2")
    assert res.exit_code == 0 and "and 2 new training pieces for groups 2..4" in res.output, res.output
    grown = data.read_recipe(out)
    train = {s["source_id"]: s for s in recipe["sources"] if s["split"] == "train"}
    added = [s for s in grown["sources"] if "from_group" in s]
    arranged = [s for s in added if s["added_as"] == "arrangement"]
    pieces = [s for s in added if s["added_as"] == "piece"]
    assert grown["sources"][:3] == recipe["sources"] and 1 <= len(arranged) <= 2 * len(train) and len(pieces) == 2
    assert grown["added_sources"] == {"from_group": 2, "n_sources": len(added), "n_arrangements": len(arranged),
                                      "n_pieces": 2}
    for s in arranged:
        original = train[s["source_id"].rsplit("-a", 1)[0]]
        assert s["piece"] == original["piece"]
        assert s["arrangement"] != original["arrangement"]              # another ensemble, tempo or passage
    stems = {s["piece"].rsplit(".", 1)[0] for s in recipe["sources"]}   # of every split
    assert not {s["piece"].rsplit(".", 1)[0] for s in pieces} & stems   # scores the recipe never had
    for s in added:
        assert s["split"] == "train" and s["from_group"] == 2
        pcm = np.load(out / "sources" / f"{s['source_id']}.npy")
        assert zlib.crc32(pcm.tobytes()) == s["crc32"]
    # the old groups are unchanged; every new group is a training group on the added sources only
    pool = data.pools(grown)
    assert [data.group_items(grown, g, pool) for g in range(2)] == [data.group_items(recipe, g) for g in range(2)]
    new_rows = [r for g in range(2, 5) for r in data.group_items(grown, g, pool)]
    assert {r["split"] for r in new_rows} == {"train"}
    assert {r["source_id"] for r in new_rows} <= {s["source_id"] for s in added}
    summary = data.make_data(out, workers=1)
    journal = data.read_journal(out)
    assert journal[:len(before)] == before and summary["ok"] == len(journal) == len(before) + len(new_rows)
    # an added source's audio is rebuilt from the recipe alone, bit for bit
    for s in (arranged[0], pieces[0]):
        (out / "sources" / f"{s['source_id']}.npy").unlink()
    assert data.rerender_missing(out, grown) == 2
    for s in (arranged[0], pieces[0]):
        assert zlib.crc32(np.load(out / "sources" / f"{s['source_id']}.npy").tobytes()) == s["crc32"]
    # refusals leave nothing behind
    for src, args, message in ((folder, ["--arrangements", "1"], "new groups only"),
                               (folder, ["--pieces", "1"], "new groups only"),
                               (out, ["--groups", "6", "--pieces", "1"], "already has added sources"),
                               (folder, ["--arrangements", "-1"], "0 or more"),
                               (folder, ["--pieces", "-1"], "0 or more")):
        res = _grow_cli(src, tmp_path / "x", *args)
        assert res.exit_code == 2 and message in res.output, res.output
        assert not (tmp_path / "x").exists()
    toy, _ = _toy(tmp_path)                                          # synthetic sources have no score to arrange
    with pytest.raises(BenchError, match="no rendered training sources"):
        data.grow(toy, tmp_path / "z", n_groups=4, arrangements=1)
    assert not (tmp_path / "z").exists()


def test_render_sources_fills_up_from_other_composers_when_one_runs_out(tmp_path, monkeypatch):
    from types import SimpleNamespace

    paths = {"bach": ["bach/a.mxl", "bach/b.mxl"], "palestrina": [f"palestrina/p{i}.krn" for i in range(9)]}
    seen = {}

    def candidates(seed, exclude):
        seen["exclude"] = exclude
        return {top: [p for p in ps if p.rsplit(".", 1)[0] not in exclude] for top, ps in paths.items()}

    def render(job):
        rel, index, _, _ = job
        arr = SimpleNamespace(clip_id=rel.replace("/", "-"), instrumentation="piano", as_dict=lambda: {"i": index})
        return arr, np.zeros(48000, np.int16)

    monkeypatch.setattr(data, "_candidate_paths", candidates)
    monkeypatch.setattr(data, "_render_source", render)
    monkeypatch.setattr(data, "SOURCE_QUOTAS", {"bach": 1, "palestrina": 1})
    rows = data.render_sources(tmp_path, n_pieces=6, exclude={"palestrina/p0"}, first_index=100)
    # the quotas ask for 3 + 3; bach has 2, so a second pass takes a fourth palestrina piece
    assert [r["piece"] for r in rows] == ["bach/a.mxl", "bach/b.mxl", "palestrina/p1.krn", "palestrina/p2.krn",
                                          "palestrina/p3.krn", "palestrina/p4.krn"]
    assert "palestrina/p0" in seen["exclude"] and rows[0]["arrangement"] == {"i": 101}
