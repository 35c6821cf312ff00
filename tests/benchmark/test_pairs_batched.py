"""`bench haaqi --manifest` scores the files judged against one reference in one batched call per ear."""

import numpy as np
import pandas as pd
import soundfile as sf

from benchmark import haaqi, pairs
from benchmark.audiogram import parse_audiogram
from benchmark.errors import AudioError


def _versions(tmp_path, ref_path):
    """Three processed versions of the stereo reference, plus a short, a silent and a 'bad' one."""
    ref, rate = sf.read(ref_path, always_2d=True)
    rng = np.random.default_rng(1)
    files = {}
    for name, x in {"noisy": ref + 0.02 * rng.standard_normal(ref.shape),
                    "quiet": 0.5 * ref,
                    "clipped": np.clip(ref, -0.05, 0.05),
                    "short": ref[:-100],
                    "silent": np.zeros_like(ref),
                    "bad": ref + 0.01}.items():
        files[name] = tmp_path / f"{name}.wav"
        sf.write(files[name], x, rate, subtype="FLOAT")
    return files


def _manifest(tmp_path, ref, names, files):
    path = tmp_path / "pairs.csv"
    pd.DataFrame({"reference": [ref.name] * len(names), "processed": [files[n].name for n in names],
                  "audiogram": ["N3"] * len(names), "spl_db": ["65"] * len(names)}).to_csv(path, index=False)
    return pairs.read_manifest(path)


def test_a_file_scores_the_same_alone_and_in_a_batch(tmp_path, pair_files, monkeypatch):
    ref, _, _ = pair_files
    files = _versions(tmp_path, ref)
    names = ["noisy", "short", "quiet", "silent", "clipped"]
    calls = []
    score_many = haaqi.score_many
    monkeypatch.setattr(haaqi, "score_many", lambda r, ps, **kw: calls.append(len(ps)) or score_many(r, ps, **kw))
    scores = pairs.score_manifest(_manifest(tmp_path, ref, names, files))
    assert calls == [3, 3]                        # one call per ear for the three good files
    assert scores["row"].tolist() == [0, 0, 1, 2, 2, 3, 4, 4]
    assert scores["status"].tolist() == ["ok", "ok", "error", "ok", "ok", "error", "ok", "ok"]
    assert "lengths differ" in scores.loc[2, "error"] and "all zeros" in scores.loc[5, "error"]
    ok = scores[scores["status"] == "ok"]
    for (_, row), name in zip(ok.iloc[::2].iterrows(), ["noisy", "quiet", "clipped"]):
        alone = pairs.score_pair(ref, files[name], audiogram=parse_audiogram("N3"), spl_db=65.0)
        got = ok[ok["processed"] == str(files[name])]
        assert got["haaqi"].tolist() == [r["haaqi"] for r in alone]          # bit for bit
    assert ok["haaqi"].between(0, 1).all() and ok["haaqi"].nunique() == 6


def test_a_file_that_fails_inside_the_batch_fails_alone(tmp_path, pair_files, monkeypatch):
    ref, _, _ = pair_files
    files = _versions(tmp_path, ref)
    bad = sf.read(files["bad"], always_2d=True)[0].T.astype(np.float32)
    score_many = haaqi.score_many

    def failing(r, ps, **kw):
        if any(np.array_equal(p, bad[0]) or np.array_equal(p, bad[1]) for p in ps):
            raise AudioError("this file upsets the model")
        return score_many(r, ps, **kw)

    monkeypatch.setattr(haaqi, "score_many", failing)
    scores = pairs.score_manifest(_manifest(tmp_path, ref, ["noisy", "bad", "quiet"], files))
    assert scores["status"].tolist() == ["ok", "ok", "error", "ok", "ok"]
    assert "upsets" in scores.loc[2, "error"]


def test_batches_are_capped_and_keep_the_order(tmp_path, pair_files):
    ref, _, _ = pair_files
    files = _versions(tmp_path, ref)
    table = _manifest(tmp_path, ref, ["noisy", "quiet", "clipped"], files)
    one = pairs.score_manifest(table, max_batch=1)
    two = pairs.score_manifest(table, max_batch=2)
    assert one["haaqi"].tolist() == two["haaqi"].tolist()
    assert one["row"].tolist() == [0, 0, 1, 1, 2, 2]
