"""HAAQI-Net training data: the recipe, ``make-data``, the label table, splits and model inputs.

A data set is a folder (see docs/haaqinet-data.md)::

    recipe.json          everything that determines the items (sources, audiograms, splits, sizes, seed)
    sources/             the rendered music (a cache: int16 mono 24 kHz .npy per source, rebuilt from the recipe)
    labels.jsonl         the label table: one JSON row per item, append-only journal (resumable)
    labels.parquet       the same table, rewritten at the end of every make-data run
    cache/wave16k/       model inputs (float32 16 kHz .npy per item; a cache, regenerated on demand)

An *item* is one ear hearing one 4-s music excerpt at one presentation level under
one condition. Items come in *groups* that share the excerpt, the ear's audiogram,
the level and HAAQI's threshold-noise seed (like the processors of one trial in
``bench run``); a group holds ``conditions_per_group`` conditions. Everything about
a group is drawn from ``numpy.random.default_rng([recipe seed, group index, ...])``,
and every row stores what it needs to regenerate its audio (source, offset,
audiogram, level, degradation steps with their parameters, seeds).

Signal chain of an item at 24 kHz (HAAQI's internal rate)::

    clean    = source window (mono), presented at spl_db dB SPL (level1 = spl_db - 20 log10 rms(clean))
    x        = pre-degradations(clean)          (haaqinet.degrade; noise, filters, clipping, ...)
    x        = aid(x)                           (none | nalr | nalr-agc | camfit-wdrc, processors.registry)
    judged   = post-degradations(x)             (device clipping, level errors, receiver roll-off, peaks)
    reference = NAL-R(clean) for the ear        (benchmark.trial.reference_signal, "nalr" convention)
    label    = HAAQI(reference, judged, level1, equalisation=2, seed)
    model input = judged resampled to 16 kHz, with spl_db of the judged signal = level1 + 20 log10 rms(judged)
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
import zlib
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np

from benchmark.audiogram import STANDARD_FREQUENCIES_HZ, Audiogram, Listener, builtin_audiograms
from benchmark.errors import BenchError

logger = logging.getLogger(__name__)

#: Bump when item generation changes (old tables are then refused).
DATA_VERSION = 1
#: Rate of sources, degradations and HAAQI, in Hz.
RATE_HZ = 24000
#: Rate of the model input, in Hz.
MODEL_RATE_HZ = 16000
RECIPE, LABELS, TABLE = "recipe.json", "labels.jsonl", "labels.parquet"
SPLITS = ("train", "val", "test", "unseen-conditions")
AIDS = ("none", "nalr", "nalr-agc", "camfit-wdrc")
#: Degradation kinds that only the "unseen-conditions" split contains.
DEFAULT_HELD_OUT = ("noise-pink", "bandpass", "softclip")
#: Kinds allowed after the aid (device clipping, level errors, receiver roll-off, peaks).
POST_KINDS = ("hardclip", "softclip", "level", "lowpass", "resonance")


# -- recipe -----------------------------------------------------------------------------------
def new_recipe(*, n_items: int, sources: list[dict], seed: int = 0, item_s: float = 4.0,
               conditions_per_group: int = 4, n_listeners: int = 500,
               split_fractions: dict | None = None, held_out_kinds=DEFAULT_HELD_OUT,
               spl_range_db=(45, 85), haaqi_backend: str = "fast", denoiser_share: float = 0.0,
               level_copies: int = 0) -> dict:
    """A recipe document (JSON-ready). ``sources`` are rows of :func:`render_sources`.

    ``denoiser_share``: the share of conditions whose aid is a speech-denoiser chain (:func:`with_denoiser`).
    ``level_copies``: copies of every training item at other levels (:func:`level_copy_rows`).
    """
    from haaqinet.degrade import KINDS

    for kind in held_out_kinds:
        if kind not in KINDS:
            raise BenchError(f"held-out kind {kind!r} is not a degradation ({', '.join(KINDS)})")
    if not sources:
        raise BenchError("a recipe needs at least one source")
    fractions = split_fractions or {"train": 0.80, "val": 0.06, "test": 0.08, "unseen-conditions": 0.06}
    if set(fractions) != set(SPLITS):
        raise BenchError(f"split fractions must name {SPLITS}, got {sorted(fractions)}")
    n_groups = max(1, math.ceil(n_items / conditions_per_group))
    splits = assign_splits(len(sources), seed, 11, PIECE_FRACTIONS)
    sources = [{**src, "split": split} for src, split in zip(sources, splits)]
    extra = {"denoiser_aids": denoiser_spec(denoiser_share)} if denoiser_share else {}
    if level_copies:
        extra["level_copies"] = level_copies_spec(level_copies)
    return {
        **extra,
        "data_version": DATA_VERSION, "seed": int(seed), "rate_hz": RATE_HZ, "model_rate_hz": MODEL_RATE_HZ,
        "item_s": float(item_s), "n_groups": n_groups, "conditions_per_group": int(conditions_per_group),
        "split_fractions": fractions, "held_out_kinds": list(held_out_kinds),
        "spl_range_db": [int(spl_range_db[0]), int(spl_range_db[1])],
        "reference": "nalr", "equalisation": 2, "haaqi_backend": haaqi_backend,
        "listeners": {"generator_seed": int(seed), "n_generated": int(n_listeners),
                      "builtin_in_train": sorted(builtin_audiograms())},
        "sources": sources,
    }


def write_recipe(folder: Path, recipe: dict) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / RECIPE).write_text(json.dumps(recipe, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def read_recipe(folder: Path) -> dict:
    path = Path(folder) / RECIPE
    if not path.is_file():
        raise BenchError(f"{folder} is not a HAAQI-Net data set (no {RECIPE}); run `bench haaqinet make-data`")
    recipe = json.loads(path.read_text(encoding="utf-8"))
    if recipe.get("data_version") != DATA_VERSION:
        raise BenchError(f"{path}: data version {recipe.get('data_version')} is not {DATA_VERSION}; make it again")
    return recipe


def _split_of(index: int, seed: int, salt: int, fractions: dict) -> str:
    u = np.random.default_rng([int(seed), int(index), salt]).random()
    edges = np.cumsum([fractions[s] for s in SPLITS])
    return SPLITS[min(int(np.searchsorted(edges / edges[-1], u, side="right")), len(SPLITS) - 1)]


def assign_splits(n: int, seed: int, salt: int, fractions: dict) -> list[str]:
    """Splits of ``n`` things: a seeded permutation, the first ``ceil(f * n)`` to each split of
    ``fractions`` in order, the rest to "train" (so tiny sets still fill every split)."""
    order = np.random.default_rng([int(seed), salt]).permutation(n)
    out = ["train"] * n
    start = 0
    for split, f in fractions.items():
        k = max(0, min(math.ceil(f * n), n - start - 1))  # always leave one for training
        for i in order[start:start + k]:
            out[int(i)] = split
        start += k
    return out


#: Pool key of the training sources added by ``grow`` (new arrangements, new pieces; recipe key
#: ``added_sources``, or ``arrangements`` in recipes written before new pieces could be added).
ADDED = "train-added"
#: Arrangement index of copy c of the recipe's i-th source: ARRANGEMENT_STRIDE * c + i (never a first render's).
ARRANGEMENT_STRIDE = 1_000_000

#: Share of pieces and of generated listeners kept out of training.
PIECE_FRACTIONS = {"test": 0.15, "val": 0.10}
LISTENER_FRACTIONS = {"test": 0.15, "val": 0.08}


def pools(recipe: dict) -> dict:
    """Sources and audiograms available to each split: {split: (source ids, [(name, levels)])}."""
    from haaqinet.audiograms import generate_listener

    by_split = {s: ([], []) for s in ("train", "val", "test")}
    n_gen = recipe["listeners"]["n_generated"]
    listener_splits = assign_splits(n_gen, recipe["seed"], 13, LISTENER_FRACTIONS)
    added = []                # sources added by grow: only the groups after them draw these
    for src in recipe["sources"]:
        (added if "from_group" in src else by_split[src["split"]][0]).append(src["source_id"])
    for name, a in builtin_audiograms().items():
        if name in recipe["listeners"]["builtin_in_train"]:
            by_split["train"][1].append((name, tuple(float(v) for v in a.at(STANDARD_FREQUENCIES_HZ))))
    gen_seed = recipe["listeners"]["generator_seed"]
    for i in range(n_gen):
        listener = generate_listener(i, seed=gen_seed)
        for ear in (listener.left, listener.right):
            by_split[listener_splits[i]][1].append((ear.name, ear.levels_db_hl))
    for split, (srcs, auds) in list(by_split.items()):
        if not srcs or not auds:  # only in toy data sets
            logger.warning("split %s has %d sources and %d audiograms; using the training ones", split,
                           len(srcs), len(auds))
            by_split[split] = (srcs or by_split["train"][0], auds or by_split["train"][1])
    by_split["unseen-conditions"] = by_split["test"]
    by_split[ADDED] = (added, by_split["train"][1])
    return by_split


# -- conditions -------------------------------------------------------------------------------
def _weighted(rng: np.random.Generator, weights: dict):
    keys = list(weights)
    p = np.asarray([weights[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def sample_condition(rng: np.random.Generator, *, held_out=DEFAULT_HELD_OUT, unseen: bool = False) -> dict:
    """One condition: ``{"aid", "pre": [steps], "post": [steps]}``.

    Seen splits never contain a ``held_out`` kind; ``unseen`` conditions contain at
    least one (first in the chain). Mixture (seen): 8 % clean music through NAL-R
    (HAAQI about 1), 10 % a hearing aid alone (none, nalr-agc or camfit-wdrc),
    82 % 1-3 degradations (60/30/10 %) before an aid (nalr 55 %, none 20 %,
    nalr-agc 12 %, camfit-wdrc 13 %), with one post-aid degradation 20 % of the time.
    """
    from haaqinet.degrade import KINDS, sample_step

    seen_kinds = [k for k in KINDS if k not in held_out]
    r = rng.random()
    if not unseen and r < 0.08:
        return {"aid": "nalr", "pre": [], "post": []}
    if not unseen and r < 0.18:
        return {"aid": _weighted(rng, {"none": 0.4, "nalr-agc": 0.3, "camfit-wdrc": 0.3}), "pre": [], "post": []}
    n_pre = _weighted(rng, {1: 0.6, 2: 0.3, 3: 0.1})
    kinds = []
    if unseen:
        kinds.append(str(rng.choice(list(held_out))))
    pool = [k for k in (KINDS if unseen else seen_kinds) if k not in kinds]
    kinds += [str(k) for k in rng.choice(pool, size=n_pre - len(kinds), replace=False)] if n_pre > len(kinds) else []
    aid = _weighted(rng, {"nalr": 0.55, "none": 0.20, "nalr-agc": 0.12, "camfit-wdrc": 0.13})
    post = []
    if rng.random() < 0.2:
        post_pool = [k for k in POST_KINDS if unseen or k not in held_out]
        post.append(sample_step(str(rng.choice(post_pool)), rng))
    return {"aid": aid, "pre": [sample_step(k, rng) for k in kinds], "post": post}


#: Speech-denoiser chains that may replace a condition's aid (recipe key ``denoiser_aids``), equal weights.
DENOISER_AIDS = ("spectral-gating>nalr", "mmse-stsa>nalr", "deepfilternet>nalr")


def denoiser_spec(share: float, from_group: int = 0) -> dict:
    """The recipe entry that gives a ``share`` of the conditions of groups ``from_group``.. a denoiser aid."""
    if not 0.0 <= share <= 1.0:
        raise BenchError(f"the denoiser share must be in 0..1, got {share}")
    return {"from_group": int(from_group), "share": float(share), "aids": {a: 1.0 for a in DENOISER_AIDS}}


def with_denoiser(cond: dict, rng: np.random.Generator, spec: dict) -> dict:
    """``cond`` with its aid replaced by a speech-denoiser chain, with probability ``spec["share"]``.

    The music then goes through a denoiser before NAL-R, as in ``bench run``'s ``*>nalr`` chains; the
    degradations before and after stay. The draw uses its own ``rng``, so the rest of the condition is what
    it would be without denoisers.
    """
    if rng.random() >= spec["share"]:
        return cond
    return {**cond, "aid": _weighted(rng, spec["aids"])}


def level_copies_spec(copies: int, from_group: int = 0, to_group: int | None = None,
                      min_step_db: float = 10.0) -> dict:
    """The recipe entry that relabels each training item of groups ``from_group``..``to_group - 1`` at
    ``copies`` other presentation levels (recipe key ``level_copies``; see :func:`level_copy_rows`)."""
    if copies < 0:
        raise BenchError(f"level copies must be 0 or more, got {copies}")
    if min_step_db < 0:
        raise BenchError(f"the level step must be 0 dB or more, got {min_step_db}")
    return {"copies": int(copies), "from_group": int(from_group),
            "to_group": None if to_group is None else int(to_group), "min_step_db": float(min_step_db)}


EDGE_WIDTH_DB = 10   # edge copies are judged up to this far beyond either end of the recipe's SPL range


def edge_copies_spec(copies: int, from_group: int = 0, to_group: int | None = None) -> dict:
    """The recipe entry (key ``edge_copies``) that relabels each training item of groups
    ``from_group``..``to_group - 1`` at ``copies`` levels just outside the recipe's SPL range
    (:func:`edge_copy_rows`)."""
    if copies < 1:
        raise BenchError(f"edge copies must be 1 or more, got {copies}")
    return {"copies": int(copies), "from_group": int(from_group),
            "to_group": None if to_group is None else int(to_group), "width_db": EDGE_WIDTH_DB}


def _copy_spec(recipe: dict, key: str, group: int, rows: list[dict]) -> dict | None:
    """The recipe's copy entry ``key`` if it copies this group's items (train split, groups from..to), else None."""
    spec = recipe.get(key)
    if not spec or not rows or rows[0]["split"] != "train" or group < spec["from_group"]:
        return None
    if spec.get("to_group") is not None and group >= spec["to_group"]:
        return None
    return spec


def edge_copy_rows(recipe: dict, group: int, rows: list[dict]) -> list[dict]:
    """Copies of a training group's items judged just outside the recipe's SPL range (recipe key ``edge_copies``).

    Why: a model fitted to levels drawn from ``lo``..``hi`` sees the ends of that range from one side only
    and regresses there towards the middle; with levels lo - width..lo - 1 and hi + 1..hi + width in the
    training data, ``lo`` and ``hi`` are inside what it has learnt. Copy ``c`` draws one of those integer
    levels for the group with ``np.random.default_rng([seed, group, 41, c])`` (below and above the range
    equally likely); its id is the item's with ``E<c>`` appended. Only the ``train`` split gets copies, so
    the evaluation splits stay within the range.
    """
    spec = _copy_spec(recipe, "edge_copies", group, rows)
    if spec is None:
        return []
    lo, hi = recipe["spl_range_db"]
    width = int(spec["width_db"])
    choices = list(range(int(lo) - width, int(lo))) + list(range(int(hi) + 1, int(hi) + width + 1))
    out = []
    for c in range(1, spec["copies"] + 1):
        spl = float(choices[int(np.random.default_rng([recipe["seed"], group, 41, c]).integers(len(choices)))])
        out += [{**r, "item_id": f"{r['item_id']}E{c}", "spl_db": spl, "edge_copy": c} for r in rows]
    return out


def level_copy_rows(recipe: dict, group: int, rows: list[dict]) -> list[dict]:
    """Copies of a training group's items at other presentation levels (recipe key ``level_copies``).

    Copy ``c`` (1..copies) of every item is the same audio (same degradation draws, same HAAQI seed) judged
    at one level drawn for the group with ``np.random.default_rng([seed, group, 37, c])``, uniformly from
    the recipe's SPL range less the levels within ``min_step_db`` of the original. Its id is the item's
    with ``L<c>`` appended. So the model sees the same music at two or more levels with HAAQI's labels for
    each: a paired contrast that teaches how the level changes quality for that ear. Only the ``train``
    split gets copies; the evaluation splits stay as drawn.
    """
    spec = _copy_spec(recipe, "level_copies", group, rows)
    if spec is None:
        return []
    lo, hi = recipe["spl_range_db"]
    base = rows[0]["spl_db"]
    choices = [v for v in range(int(lo), int(hi) + 1) if abs(v - base) >= spec["min_step_db"]]
    if not choices:           # the SPL range has no level far enough from the original
        return []
    out = []
    for c in range(1, spec["copies"] + 1):
        spl = float(choices[int(np.random.default_rng([recipe["seed"], group, 37, c]).integers(len(choices)))])
        out += [{**r, "item_id": f"{r['item_id']}L{c}", "spl_db": spl, "level_copy": c} for r in rows]
    return out


def condition_name(cond: dict) -> str:
    """Short label, e.g. ``nalr(noise-white+lowpass)>hardclip``; ``nalr`` alone is clean aided music."""
    pre = "+".join(s["kind"] for s in cond["pre"])
    post = "".join(f">{s['kind']}" for s in cond["post"])
    return f"{cond['aid']}({pre})" + post if pre else cond["aid"] + post


def condition_kinds(cond: dict) -> list[str]:
    return [s["kind"] for s in cond["pre"] + cond["post"]]


def group_items(recipe: dict, group: int, pool: dict | None = None) -> list[dict]:
    """The item rows of one group (without labels), deterministic in (recipe, group)."""
    pool = pool or pools(recipe)
    seed = recipe["seed"]
    added = added_sources(recipe)
    if added and group >= added["from_group"]:
        split, (sources, audiograms) = "train", pool[ADDED]
    else:
        split = _split_of(group, seed, 17, recipe["split_fractions"])
        sources, audiograms = pool[split]
    rng = np.random.default_rng([seed, group, 19])
    src = recipe_source(recipe, sources[int(rng.integers(len(sources)))])
    offset_s = draw_offset_s(rng, src, recipe["item_s"])
    aud_name, levels = audiograms[int(rng.integers(len(audiograms)))]
    lo, hi = recipe["spl_range_db"]
    spl_db = float(rng.integers(lo, hi + 1))
    seed_haaqi = int(rng.integers(0, 2**31 - 1))
    audiogram = Audiogram(levels, STANDARD_FREQUENCIES_HZ, aud_name)
    denoisers = recipe.get("denoiser_aids")
    rows = []
    for k in range(recipe["conditions_per_group"]):
        cond = sample_condition(np.random.default_rng([seed, group, k, 23]), held_out=recipe["held_out_kinds"],
                                unseen=split == "unseen-conditions")
        if denoisers and group >= denoisers["from_group"]:
            cond = with_denoiser(cond, np.random.default_rng([seed, group, k, 31]), denoisers)
        rows.append({
            "item_id": f"{group:06d}-{k}", "group": group, "split": split, "source_id": src["source_id"],
            "piece": src["piece"], "offset_s": offset_s, "audiogram": aud_name,
            "audiogram_db_hl": [float(v) for v in levels], "pta_db_hl": audiogram.pta_db_hl,
            "severity": audiogram.severity, "spl_db": spl_db, "condition": condition_name(cond),
            "aid": cond["aid"], "kinds": condition_kinds(cond), "steps": cond,
            "seed_haaqi": seed_haaqi, "seed_noise": [seed, group, k, 29],
        })
    return rows + level_copy_rows(recipe, group, rows) + edge_copy_rows(recipe, group, rows)


def draw_offset_s(rng: np.random.Generator, src: dict, item_s: float) -> float:
    """A seeded start (s) of an ``item_s``-second excerpt of source ``src``, on a 0.25-s grid."""
    max_offset = max(0.0, src["duration_s"] - item_s)
    return round(float(rng.integers(0, int(max_offset / 0.25) + 1)) * 0.25, 2)


def added_sources(recipe: dict) -> dict | None:
    """The recipe's entry for sources added by ``grow`` ({from_group, n_sources, ...}), or None."""
    return recipe.get("added_sources") or recipe.get("arrangements")


def recipe_source(recipe: dict, source_id: str) -> dict:
    for src in recipe["sources"]:
        if src["source_id"] == source_id:
            return src
    raise BenchError(f"source {source_id!r} is not in the recipe")


# -- sources --------------------------------------------------------------------------------
#: music21 corpus folders and how many pieces to take from each (in order, until n_pieces).
SOURCE_QUOTAS = {"bach": 50, "palestrina": 30, "monteverdi": 18, "trecento": 12, "beethoven": 10, "mozart": 8,
                 "haydn": 6, "josquin": 5, "schumann_robert": 4, "schumann_clara": 3, "handel": 1, "schubert": 1,
                 "verdi": 1, "weber": 1, "luca": 1, "ciconia": 1, "lusitano": 1, "johnson_j_r": 1, "beach": 1,
                 "corelli": 1, "cpebach": 1, "chopin": 1, "joplin": 1, "schoenberg": 2, "webern": 1}
#: Ensembles: General-MIDI programs (0-based) spread over the parts from top to bottom.
ENSEMBLES = {
    "strings": (40, 40, 41, 42, 43), "string-ensemble": (48, 49), "brass": (56, 60, 57, 58),
    "winds": (73, 68, 71, 70), "organ": (19, 20, 19), "choir": (52, 53, 52), "piano": (0, 1),
    "harpsichord": (6,), "mallets": (11, 12, 13), "guitar": (25, 24, 24, 32), "saxophones": (64, 65, 66, 67),
    "synth": (80, 81, 88, 38), "band": (0, 71, 33), "accordion": (21, 22),
}


def _candidate_paths(seed: int, exclude: set[str]) -> dict[str, list[str]]:
    """music21 corpus paths per folder (no multi-tune .abc collections), in a seeded order."""
    from music21 import corpus

    out: dict[str, list[str]] = {}
    for path in sorted(str(p) for p in corpus.getPaths()):
        rel = path.split("/corpus/")[-1]
        top = rel.split("/")[0]
        if top in SOURCE_QUOTAS and not rel.endswith(".abc") and rel.rsplit(".", 1)[0] not in exclude:
            out.setdefault(top, []).append(rel)
    for top, paths in out.items():
        order = np.random.default_rng([seed, zlib.crc32(top.encode())]).permutation(len(paths))
        out[top] = [paths[i] for i in order]
    return out


def _arrangement(rel: str, index: int, seed: int):
    """An Arrangement of one corpus score: seeded ensemble, tempo, start measure and drums."""
    import warnings

    from music21 import corpus, stream

    from benchmark.corpus.recipe import Arrangement

    rng = np.random.default_rng([seed, index, 31])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score = corpus.parse(rel)
    n_parts = len(score.parts)
    numbers = [m.number for m in score.parts[0].getElementsByClass(stream.Measure)]
    if not 1 <= n_parts <= 10 or len(numbers) < 4:
        raise BenchError(f"{rel}: {n_parts} parts, {len(numbers)} measures")
    ensemble = str(rng.choice(list(ENSEMBLES)))
    progs = ENSEMBLES[ensemble]
    programs = tuple((progs[round(i * (len(progs) - 1) / max(n_parts - 1, 1))],) for i in range(n_parts))
    first = numbers[int(rng.integers(0, max(1, int(len(numbers) * 0.6))))]
    drums = ensemble in ("band", "synth") or rng.random() < 0.12
    source_id = "m21-" + re.sub(r"[^a-z0-9.]+", "-", rel.rsplit(".", 1)[0].lower()).strip("-.")
    return Arrangement(source_id, rel, rel, ensemble, programs, float(rng.integers(60, 161)),
                       first_measure=first, drums=bool(drums))


def render_sources(folder: Path, *, n_pieces: int, seed: int = 0, source_s: float = 6.0, progress=None,
                   workers: int = 1, exclude: set[str] = frozenset(), first_index: int = 0) -> list[dict]:
    """Render ``n_pieces`` music21 scores (not those of the built-in corpus) into ``folder/sources``.

    Each source is the mid channel ((L + R) / 2) of a ``source_s``-second excerpt
    rendered by :mod:`benchmark.corpus.render`, resampled to 24 kHz and stored as
    int16 (full scale 32767). Scores that fail to parse or render, or are shorter
    than ``source_s``, are skipped. Needs music21, midirenderer and pretty_midi.

    Pieces are taken per composer folder in proportion to ``SOURCE_QUOTAS``; where
    a folder runs out, a second pass fills up from the folders that have more.
    ``exclude``: corpus paths without extension never to take (for example the
    pieces a recipe already has). ``first_index``: arrangement indices start
    after it, so added pieces get arrangements of their own.

    With ``workers`` > 1 the candidates of each composer are rendered in
    ordered batches by that many processes and accepted in order, so the
    sources are the same as with one (a batch may render a few candidates that
    are not needed).

    Returns:
        source rows for the recipe: source_id, piece, ensemble, arrangement,
        duration_s and a CRC-32 of the int16 samples.
    """
    from benchmark.corpus.recipe import BUILTIN_RECIPE

    builtin = {a.source.rsplit(".", 1)[0] for a in BUILTIN_RECIPE}
    candidates = _candidate_paths(seed, builtin | set(exclude))
    quotas = dict(SOURCE_QUOTAS)
    scale = n_pieces / sum(quotas.values())
    want = {top: max(1, round(q * scale)) for top, q in quotas.items()}
    rows, state = [], {"index": first_index}
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        positions = {top: 0 for top in quotas}
        for fill in (False, True):   # the quotas, then (where a folder ran out) whatever the others have left
            for top in quotas:
                limit = n_pieces if fill else want[top]
                positions[top] = _take_pieces(folder, candidates.get(top, []), positions[top], limit, n_pieces,
                                              rows, state, seed, source_s, pool, workers, progress)
    finally:
        if pool:
            pool.shutdown()
    return rows


def _take_pieces(folder, paths, pos, limit, n_pieces, rows, state, seed, source_s, pool, workers, progress):
    """Render ``paths[pos:]`` in order into ``rows`` until this folder has ``limit`` more pieces (or there
    are ``n_pieces``); returns the position reached."""
    batch, taken = (2 * workers if pool else 1), 0
    while pos < len(paths) and taken < limit and len(rows) < n_pieces:
        jobs = [(rel, state["index"] + 1 + j, seed, source_s) for j, rel in enumerate(paths[pos:pos + batch])]
        results = pool.map(_render_source, jobs) if pool else map(_render_source, jobs)
        for (rel, job_index, _, _), result in zip(jobs, results):
            if taken >= limit or len(rows) >= n_pieces:
                break
            state["index"], pos = job_index, pos + 1
            if result is None or any(rel.rsplit(".", 1)[0] == r["piece"].rsplit(".", 1)[0] for r in rows):
                continue  # did not render, or the same work in another format
            arr, pcm = result
            if any(r["source_id"] == arr.clip_id for r in rows):
                continue
            rows.append(_store_source(folder, arr, pcm, rel, source_s))
            taken += 1
            if progress:
                progress(len(rows), n_pieces, arr.clip_id)
    return pos


def render_arrangements(folder: Path, recipe: dict, copies: int, from_group: int, *, workers: int = 1,
                        progress=None) -> list[dict]:
    """``copies`` new arrangements of the score of every training source, rendered into ``folder/sources``.

    Copy c of the recipe's i-th source is :func:`_arrangement` with index ``ARRANGEMENT_STRIDE * c + i``: its
    own ensemble, tempo, start measure and drums, from the same score, so it stays in the training split
    (pieces never cross splits). Its id is the source's with ``-a<c>`` appended. An arrangement that does
    not render, is shorter than the source or is silent is skipped (deterministically). Rows carry
    ``from_group``: only groups from there on draw them (:func:`group_items`), so labelled items never change.
    """
    import dataclasses

    jobs = []
    for i, src in enumerate(recipe["sources"]):
        if src["split"] != "train" or src.get("arrangement") is None or "from_group" in src:
            continue
        for c in range(1, copies + 1):
            jobs.append((src, c, (src["piece"], ARRANGEMENT_STRIDE * c + i, recipe["seed"], src["render_s"])))
    if not jobs:
        raise BenchError("the recipe has no rendered training sources to arrange again")
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    rows = []
    try:
        results = (pool.map(_render_source, [j[2] for j in jobs], chunksize=4) if pool
                   else map(_render_source, [j[2] for j in jobs]))
        for k, ((src, c, _), result) in enumerate(zip(jobs, results)):
            if progress:
                progress(k + 1, len(jobs), src["source_id"])
            if result is None:
                continue
            arr, pcm = result
            arr = dataclasses.replace(arr, clip_id=f"{src['source_id']}-a{c}")
            rows.append({**_store_source(folder, arr, pcm, src["piece"], src["render_s"]),
                         "split": "train", "from_group": int(from_group), "added_as": "arrangement"})
    finally:
        if pool:
            pool.shutdown()
    if not rows:
        raise BenchError("no new arrangement rendered")
    return rows


def _source_pcm(x: np.ndarray) -> np.ndarray:
    """A rendered excerpt (2, n) at 44.1 kHz as a stored source: its mid channel at 24 kHz, int16."""
    from scipy.signal import resample_poly

    mid = resample_poly(x.mean(axis=0).astype(np.float64), 80, 147)  # 44.1 -> 24 kHz
    return np.clip(np.round(mid * 32767.0), -32767, 32767).astype(np.int16)


def _source_path(folder, source_id: str) -> Path:
    return Path(folder) / "sources" / f"{source_id}.npy"


def _store_source(folder, arr, pcm: np.ndarray, piece: str, render_s: float) -> dict:
    """Save a rendered source (int16 at 24 kHz) under ``folder/sources``; its recipe row."""
    path = _source_path(folder, arr.clip_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, pcm)
    return {"source_id": arr.clip_id, "piece": piece, "ensemble": arr.instrumentation, "arrangement": arr.as_dict(),
            "render_s": render_s, "duration_s": pcm.size / RATE_HZ, "crc32": zlib.crc32(pcm.tobytes())}


def _render_source(job):
    """(arrangement, int16 mid channel at 24 kHz) of one candidate score, or None where it cannot be used."""
    from benchmark.corpus import render

    rel, index, seed, source_s = job
    try:
        arr = _arrangement(rel, index, seed)
        x = render.render_excerpt(arr, excerpt_s=source_s)
    except Exception as exc:  # noqa: BLE001 - many corpus files do not render
        logger.info("skipping %s: %s", rel, exc)
        return None
    if x.shape[1] < round(source_s * render.SAMPLE_RATE_HZ):
        return None
    pcm = _source_pcm(x)
    if _rms(pcm.astype(float)) < 30:  # silent after the mix
        return None
    return arr, pcm


def prepare(folder: Path, *, n_items: int, n_pieces: int, seed: int = 0, source_s: float = 6.0,
            progress=None, workers: int = 1, **recipe_args) -> dict:
    """The recipe of ``folder``, creating it (and rendering its sources with ``workers`` processes) if it has none.

    Rendered sources are listed in ``sources/sources.json``; a later call with the
    same ``n_pieces``, ``seed`` and ``source_s`` reuses them.
    """
    folder = Path(folder)
    if (folder / RECIPE).is_file():
        recipe = read_recipe(folder)
        missing = rerender_missing(folder, recipe, workers=workers)
        if missing:
            logger.info("rendered %d missing sources again", missing)
        return recipe
    listing = folder / "sources" / "sources.json"
    key = {"n_pieces": n_pieces, "seed": seed, "source_s": source_s}
    rows = None
    if listing.is_file():
        doc = json.loads(listing.read_text(encoding="utf-8"))
        rows = doc["sources"] if doc.get("key") == key else None
    if rows is None:
        rows = render_sources(folder, n_pieces=n_pieces, seed=seed, source_s=source_s, progress=progress,
                              workers=workers)
        listing.write_text(json.dumps({"key": key, "sources": rows}, indent=1) + "\n", encoding="utf-8")
    recipe = new_recipe(n_items=n_items, sources=rows, seed=seed, **recipe_args)
    write_recipe(folder, recipe)
    return recipe


def _copies_end(spec: dict) -> float:
    """The first group a copy entry leaves uncopied (inf: it copies every group)."""
    return math.inf if spec.get("to_group") is None else spec["to_group"]


def _grown_copies(before: dict | None, spec: dict, kept: str) -> dict:
    """Copy entry ``spec`` merged into the recipe's entry ``before``: it keeps before's ``kept`` setting and
    first group, and may only add copies or groups (items already labelled never change)."""
    if before is None:
        return spec
    spec = {**spec, "from_group": min(before["from_group"], spec["from_group"]), kept: before[kept]}
    if spec["copies"] < before["copies"] or _copies_end(spec) < _copies_end(before):
        raise BenchError(f"the recipe already copies groups {before['from_group']}..{before.get('to_group')} "
                         f"{before['copies']} time(s); a grown recipe may only add copies or groups")
    return spec


def grown_recipe(recipe: dict, *, n_groups: int | None = None, denoiser_share: float | None = None,
                 level_copies: int | None = None, level_copies_to: int | None = None,
                 edge_copies: int | None = None, edge_copies_to: int | None = None,
                 added_sources: list[dict] | None = None) -> dict:
    """``recipe`` grown without changing any item it already defines.

    ``n_groups``: more groups (never fewer). ``denoiser_share``: denoiser aids for the new groups only (a
    recipe that has them keeps them). ``level_copies``: copies of the training items of groups
    0..``level_copies_to`` - 1 (default: every group); an existing entry may only gain copies or groups.
    ``edge_copies``: copies at levels just outside the SPL range (:func:`edge_copy_rows`) of the training
    items of groups 0..``edge_copies_to`` - 1; the same rule. ``added_sources``: rows of
    :func:`render_arrangements` and :func:`render_new_pieces`; every new group is then a training group drawn
    from them only (recipe key ``added_sources``), so the evaluation splits stay exactly as they were.
    """
    out = json.loads(json.dumps(recipe))
    old_groups = recipe["n_groups"]
    if n_groups is not None:
        if n_groups < old_groups:
            raise BenchError(f"a grown recipe keeps its {old_groups} groups; --groups {n_groups} is fewer")
        out["n_groups"] = int(n_groups)
    if denoiser_share is not None:
        if "denoiser_aids" in recipe:
            raise BenchError("the recipe already has denoiser aids; changing them would change labelled items")
        if out["n_groups"] == old_groups:
            raise BenchError("denoiser aids go to new groups only: give --groups more than "
                             f"{old_groups}")
        out["denoiser_aids"] = denoiser_spec(denoiser_share, from_group=old_groups)
    if added_sources:
        check_added(recipe, out["n_groups"])
        if any(src.get("from_group") != old_groups or src.get("split") != "train" for src in added_sources):
            raise BenchError(f"added sources must be training sources for groups from {old_groups}")
        out["sources"] = out["sources"] + json.loads(json.dumps(added_sources))
        kinds = [src.get("added_as") for src in added_sources]
        out["added_sources"] = {"from_group": old_groups, "n_sources": len(added_sources),
                                "n_arrangements": kinds.count("arrangement"), "n_pieces": kinds.count("piece")}
    if level_copies is not None:
        spec = level_copies_spec(level_copies, 0, out["n_groups"] if level_copies_to is None else level_copies_to)
        out["level_copies"] = _grown_copies(recipe.get("level_copies"), spec, "min_step_db")
    if edge_copies is not None:
        spec = edge_copies_spec(edge_copies, 0, out["n_groups"] if edge_copies_to is None else edge_copies_to)
        out["edge_copies"] = _grown_copies(recipe.get("edge_copies"), spec, "width_db")
    return out


def check_added(recipe: dict, n_groups: int | None) -> None:
    """Refuse added sources for ``recipe`` grown to ``n_groups``: they go to new groups only, once."""
    if added_sources(recipe):
        raise BenchError("the recipe already has added sources; grow it from the folder before them")
    if (n_groups or 0) <= recipe["n_groups"]:
        raise BenchError("new arrangements and pieces go to new groups only: give --groups more than "
                         f"{recipe['n_groups']}")


#: Arrangement indices of pieces added by grow start after this (beyond every first render and copy).
NEW_PIECE_INDEX = 10**12


def render_new_pieces(folder: Path, recipe: dict, n_pieces: int, from_group: int, *, workers: int = 1,
                      progress=None) -> list[dict]:
    """``n_pieces`` music21 scores that ``recipe`` has in no split, rendered into ``folder/sources`` as training
    sources for groups from ``from_group`` on (:func:`render_sources`; same composers' quotas, seed and
    excerpt length as the recipe's first sources)."""
    taken = {src["piece"].rsplit(".", 1)[0] for src in recipe["sources"]}
    source_s = recipe["sources"][0]["render_s"]
    rows = render_sources(folder, n_pieces=n_pieces, seed=recipe["seed"], source_s=source_s, progress=progress,
                          workers=workers, exclude=taken, first_index=NEW_PIECE_INDEX)
    if not rows:
        raise BenchError("no new piece rendered: the music21 corpus has no other usable score")
    if len(rows) < n_pieces:
        logger.warning("rendered %d new pieces of the %d asked for: the corpus has no more", len(rows), n_pieces)
    return [{**row, "split": "train", "from_group": int(from_group), "added_as": "piece"} for row in rows]


def grow(source: Path, out: Path, *, arrangements: int = 0, pieces: int = 0, workers: int = 1, progress=None,
         **changes) -> dict:
    """A new data set folder ``out``: ``source``'s sources, labels and cached inputs, and its recipe grown
    by :func:`grown_recipe`. Checks that every item of ``source`` is defined the same in the new recipe;
    ``make-data --out out`` then labels only the new items. ``arrangements``: that many new arrangements of
    every training source (:func:`render_arrangements`); ``pieces``: that many scores new to the recipe
    (:func:`render_new_pieces`); both rendered with ``workers`` processes for the new groups only. Returns
    the new recipe."""
    import shutil

    source, out = Path(source), Path(out)
    recipe = read_recipe(source)
    if out.exists() and any(out.iterdir()):
        raise BenchError(f"{out} exists and is not empty; give a new folder")
    grown_recipe(recipe, **changes)   # refuses bad changes before anything is rendered
    if arrangements or pieces:
        check_added(recipe, changes.get("n_groups"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copytree(source / "sources", out / "sources")
        added = []
        if arrangements:
            added += render_arrangements(out, recipe, arrangements, recipe["n_groups"], workers=workers,
                                         progress=progress)
        if pieces:
            added += render_new_pieces(out, recipe, pieces, recipe["n_groups"], workers=workers,
                                       progress=progress)
        new = grown_recipe(recipe, added_sources=added, **changes)
        pool_old, pool_new = pools(recipe), pools(new)
        for g in range(recipe["n_groups"]):
            old_rows = group_items(recipe, g, pool_old)
            if group_items(new, g, pool_new)[:len(old_rows)] != old_rows:   # cannot happen; guards the rules
                raise BenchError(f"the grown recipe changes group {g}; nothing written")
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    if (source / LABELS).is_file():
        shutil.copy2(source / LABELS, out / LABELS)
    cached = source / "cache" / "wave16k"
    if cached.is_dir():   # hard links where the file system allows (the inputs are never rewritten in place)
        shutil.copytree(cached, out / "cache" / "wave16k", copy_function=_link_or_copy)
    write_recipe(out, new)
    return new


def _link_or_copy(src, dst):
    import shutil

    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def synthetic_sources(folder: Path, *, n: int = 4, seconds: float = 2.0, seed: int = 0) -> list[dict]:
    """Toy sources for tests and demos (no music21): harmonic notes over a bass, int16 24 kHz.

    Returns source rows like :func:`render_sources` (piece ``synthetic/<i>``).
    """
    out_dir = Path(folder) / "sources"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        rng = np.random.default_rng([seed, i, 37])
        t = np.arange(round(seconds * RATE_HZ)) / RATE_HZ
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(40, 110) * t)
        for k in range(int(seconds / 0.25)):
            tt = t - k * 0.25
            env = np.where(tt >= 0, (1 - np.exp(-tt * 200)) * np.exp(-tt * rng.uniform(3, 12)), 0.0)
            f0 = 196.0 * 2 ** (rng.integers(0, 24) / 12)
            x += sum(env * np.sin(2 * np.pi * f0 * h * tt) * 0.6 ** h for h in range(1, 8))
        pcm = np.round(0.1 * x / np.sqrt(np.mean(x ** 2)) * 32767).astype(np.int16)
        sid = f"synthetic-{i}"
        np.save(out_dir / f"{sid}.npy", pcm)
        rows.append({"source_id": sid, "piece": f"synthetic/{i}", "ensemble": "synthetic", "arrangement": None,
                     "render_s": seconds, "duration_s": pcm.size / RATE_HZ, "crc32": zlib.crc32(pcm.tobytes())})
    return rows


def rerender_missing(folder: Path, recipe: dict, workers: int = 1) -> int:
    """Render again every recipe source whose file is missing (``workers`` processes); returns how many."""
    missing = [src for src in recipe["sources"]
               if not _source_path(folder, src["source_id"]).is_file()]
    for src in missing:
        if src.get("arrangement") is None:
            raise BenchError(f"source {src['source_id']} is missing from {folder}/sources and has no "
                             "arrangement to render it from")
    jobs = [(str(folder), src) for src in missing]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(min(workers, len(jobs))) as pool:
            list(pool.map(_rerender_source, jobs))
    else:
        for job in jobs:
            _rerender_source(job)
    return len(jobs)


def _rerender_source(job) -> None:
    """Render one recipe source from its arrangement into ``<folder>/sources`` (a process-pool job)."""
    from benchmark.corpus import render
    from benchmark.corpus.recipe import Arrangement

    folder, src = job
    a = dict(src["arrangement"])
    a["programs"] = tuple(tuple(p) for p in a["programs"])
    path = _source_path(folder, src["source_id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, _source_pcm(render.render_excerpt(Arrangement(**a), excerpt_s=src["render_s"])))


# -- audio of an item -------------------------------------------------------------------------
def load_source(folder: Path, src: dict) -> np.ndarray:
    """A source's samples: float64, shape (n_samples,), 24 kHz, full scale 1.0."""
    path = _source_path(folder, src["source_id"])
    if not path.is_file():
        raise BenchError(f"source {path} is missing; run make-data again to render it")
    x = np.load(path)
    if src.get("crc32") is not None and zlib.crc32(x.tobytes()) != src["crc32"]:
        raise BenchError(f"source {path} does not match the recipe (checksum); delete it and render again")
    return x.astype(np.float64) / 32767.0


def synthesise(row: dict, clean: np.ndarray) -> tuple[np.ndarray, float]:
    """The judged signal of an item and the trial's ``level1_db_spl``.

    Args:
        row: an item row (``steps``, ``audiogram_db_hl``, ``spl_db``, ``seed_noise``).
        clean: float64, shape (n_samples,), the item's clean excerpt at 24 kHz.

    Returns:
        (judged float64 (n_samples,), level1_db_spl).
    """
    from benchmark.calibration import Calibration
    from haaqinet.degrade import apply_steps
    from processors.base import Presentation, check_output
    from processors.registry import create

    level1 = row["spl_db"] - 20.0 * math.log10(_rms(clean))
    rng = np.random.default_rng(row["seed_noise"])
    cond = row["steps"]
    x = apply_steps(clean, RATE_HZ, cond["pre"], rng)
    if cond["aid"] != "none":
        audiogram = Audiogram(row["audiogram_db_hl"], STANDARD_FREQUENCIES_HZ, row["audiogram"])
        presentation = Presentation(RATE_HZ, Listener("item", audiogram, audiogram), Calibration(level1), ("left",))
        x32 = x[None, :].astype(np.float32)
        y = create(cond["aid"]).process(x32.copy(), presentation, rng=np.random.default_rng(row["seed_noise"]))
        x = check_output(y, x32)[0].astype(np.float64)
    return apply_steps(x, RATE_HZ, cond["post"], rng), level1


def clean_excerpt(folder: Path, recipe: dict, row: dict, cache: dict | None = None) -> np.ndarray:
    """The item's clean excerpt, float64 (n_samples,) at 24 kHz."""
    src = recipe_source(recipe, row["source_id"])
    if cache is not None and src["source_id"] in cache:
        x = cache[src["source_id"]]
    else:
        x = load_source(folder, src)
        if cache is not None:
            cache[src["source_id"]] = x
    start = round(row["offset_s"] * RATE_HZ)
    return x[start:start + round(recipe["item_s"] * RATE_HZ)]


def to_model_rate(x: np.ndarray) -> np.ndarray:
    """24 kHz -> 16 kHz (polyphase 2/3), float32."""
    from scipy.signal import resample_poly

    return resample_poly(np.asarray(x, dtype=np.float64), 2, 3).astype(np.float32)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


# -- labelling --------------------------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(folder: str, recipe: dict, cache_inputs: bool, backend: str | None = None) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = "1"
    _WORKER.update(folder=Path(folder), recipe=recipe, cache_inputs=cache_inputs, sources={},
                   backend=backend or recipe["haaqi_backend"])


def item_reference(folder: Path, recipe: dict, row: dict, sources: dict | None = None):
    """(clean excerpt, ear audiogram, HAAQI reference) of an item, all at 24 kHz, float64.

    The reference is the recipe's convention (``recipe["reference"]``, "nalr": NAL-R of the clean excerpt for
    the ear); ``sources`` caches the rendered sources between calls.
    """
    from benchmark.trial import reference_signal

    clean = clean_excerpt(folder, recipe, row, sources)
    audiogram = Audiogram(row["audiogram_db_hl"], STANDARD_FREQUENCIES_HZ, row["audiogram"])
    reference = reference_signal(clean.astype(np.float32), ear_audiogram=audiogram, sample_rate_hz=RATE_HZ,
                                 reference=recipe.get("reference", "nalr")).astype(np.float64)
    return clean, audiogram, reference


def label_group(rows: list[dict], folder: Path | None = None, recipe: dict | None = None,
                cache_inputs: bool | None = None) -> list[dict]:
    """Synthesise and score every item of one group; a failure is a row with status "error".

    Writes the model inputs to ``cache/wave16k/<item_id>.npy`` when ``cache_inputs``.
    """
    folder = Path(folder or _WORKER["folder"])
    recipe = recipe or _WORKER["recipe"]
    cache_inputs = _WORKER.get("cache_inputs", False) if cache_inputs is None else cache_inputs
    t0 = time.perf_counter()
    out, judged = [], []
    try:
        clean, audiogram, reference = item_reference(folder, recipe, rows[0], _WORKER.setdefault("sources", {}))
    except Exception as exc:  # noqa: BLE001 - a failure is a row
        return [{**r, "status": "error", "error": f"source: {type(exc).__name__}: {exc}"} for r in rows]
    for row in rows:
        try:
            x, level1 = synthesise(row, clean)
            if not np.all(np.isfinite(x)) or _rms(x) < 1e-9:
                raise BenchError("the judged signal is silent or not finite")
            judged.append((row, x, level1))
        except Exception as exc:  # noqa: BLE001
            out.append({**row, "status": "error", "error": f"synthesis: {type(exc).__name__}: {exc}"})
    backend = _WORKER.get("backend") or recipe["haaqi_backend"]
    by_level: dict[float, list] = {}     # level copies (recipe key level_copies) are scored per level
    for item in judged:
        by_level.setdefault(item[2], []).append(item)
    judged = [item for level in by_level.values() for item in level]
    scores = [score for level1, level in by_level.items()
              for score in _score(reference, [x for _, x, _ in level], audiogram, level1, rows[0]["seed_haaqi"],
                                  backend)]
    for (row, x, level1), score in zip(judged, scores):
        if isinstance(score, Exception):
            out.append({**row, "status": "error", "error": f"haaqi: {type(score).__name__}: {score}"})
            continue
        result = {**row, **{k: float(v) for k, v in score.as_dict().items()}, "status": "ok", "error": "",
                  "haaqi_backend": backend,
                  "level1_db_spl": level1, "judged_db_spl": level1 + 20.0 * math.log10(_rms(x))}
        if cache_inputs:
            save_input(folder, row["item_id"], to_model_rate(x))
        out.append(result)
    seconds = (time.perf_counter() - t0) / max(len(rows), 1)
    return sorted(({**r, "seconds": seconds} for r in out), key=lambda r: r["item_id"])


def _score(reference, judged, audiogram, level1, seed, backend):
    """HAAQI of each judged signal against the reference (one shared seed), exceptions in place."""
    from benchmark import haaqi

    if backend == "fast":
        try:
            module = haaqi.backend_module("fast")
            return module.score_many(reference=reference, processed_list=judged, sample_rate_hz=RATE_HZ,
                                     levels_db_hl=haaqi.haaqi_levels_db_hl(audiogram), level1_db_spl=level1,
                                     equalisation=2, seed=seed)
        except Exception:  # noqa: BLE001 - fall back to one call each, to isolate the failing item
            pass
    out = []
    for x in judged:
        try:
            out.append(haaqi.score(reference, x, sample_rate_hz=RATE_HZ, audiogram=audiogram,
                                   level1_db_spl=level1, equalisation=2, seed=seed, backend=backend))
        except Exception as exc:  # noqa: BLE001
            out.append(exc)
    return out


def save_input(folder: Path, item_id: str, x16: np.ndarray) -> None:
    path = Path(folder) / "cache" / "wave16k" / f"{item_id}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{item_id}.{os.getpid()}.npy")
    np.save(tmp, np.asarray(x16, dtype=np.float32))
    os.replace(tmp, path)


def read_journal(folder: Path) -> list[dict]:
    """Complete rows of ``labels.jsonl`` (a torn last line is ignored)."""
    from benchmark.store import read_jsonl

    return read_jsonl(Path(folder) / LABELS)


def make_data(folder: Path, *, workers: int = 1, max_seconds: float | None = None, cache_inputs: bool = False,
              progress=None, retry_errors: bool = False, haaqi_backend: str | None = None,
              reverse: bool = False) -> dict:
    """Label every group of the recipe in ``folder`` that the journal does not hold yet.

    Args:
        folder: a data set folder with ``recipe.json`` and its sources rendered.
        workers: processes (0 or 1: in this process).
        max_seconds: stop submitting work after this long (the run can be resumed).
        cache_inputs: also write the 16-kHz model inputs.
        progress: optional ``callable(done_items, total_items)``.
        retry_errors: label again the items whose rows are errors.
        haaqi_backend: HAAQI implementation for this run (default: the recipe's);
            "fast" and "pyclarity" give the same labels (within 1e-9). If every item of
            the first group fails in the fast backend, the run falls back to pyclarity.
        reverse: label the groups from the last one down (two machines can then
            share one recipe: one forward, one in reverse).

    Returns:
        a summary dict (items done, ok, errors, seconds, histogram).
    """
    from benchmark.store import drop_torn_tail

    folder = Path(folder)
    recipe = read_recipe(folder)
    t0 = time.perf_counter()
    ok, failed = set(), set()
    for r in read_journal(folder):
        (ok if r["status"] == "ok" else failed).add(r["item_id"])
    skip = ok if retry_errors else ok | failed
    pool = pools(recipe)
    todo, total = [], 0        # (group, its items not in the journal yet): a grown recipe labels only what is new
    for g in range(recipe["n_groups"])[::-1 if reverse else 1]:
        rows = group_items(recipe, g, pool)
        total += len(rows)
        missing = [r for r in rows if r["item_id"] not in skip]
        if missing:
            todo.append(missing)
    n_done = total - sum(len(rows) for rows in todo)
    drop_torn_tail(folder / LABELS)
    with open(folder / LABELS, "a", encoding="utf-8") as journal:
        def write(rows):
            nonlocal n_done
            for r in rows:
                journal.write(json.dumps(r) + "\n")
            journal.flush()
            n_done += len(rows)
            if progress is not None:
                progress(n_done, total)

        groups = iter(todo)
        expired = lambda: max_seconds is not None and time.perf_counter() - t0 > max_seconds  # noqa: E731
        _init_worker(str(folder), recipe, cache_inputs, haaqi_backend)
        for rows in groups:  # in this process: all of it, or the first group (compiles numba before forking)
            labelled = label_group(rows)
            backend = _WORKER["backend"]
            if backend == "fast" and all("haaqi:" in r.get("error", "") for r in labelled):
                logger.warning("the fast HAAQI backend failed (%s); using pyclarity", labelled[0]["error"])
                haaqi_backend = _WORKER["backend"] = "pyclarity"
                labelled = label_group(rows)
            write(labelled)
            if expired() or workers > 1:
                break
        if workers > 1 and not expired():
            _run_pool(groups, workers, folder, recipe, cache_inputs, haaqi_backend, write, expired)
    table = write_table(folder)
    return summarise(table, seconds=time.perf_counter() - t0, total=total)


def _run_pool(groups, workers, folder, recipe, cache_inputs, backend, write, expired) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")  # inherits the numba code compiled above
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(str(folder), recipe, cache_inputs, backend)) as ex:
        pending = set()
        for rows in groups:
            pending.add(ex.submit(label_group, rows))
            if len(pending) >= 4 * workers:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    write(fut.result())
            if expired():
                break
        for fut in pending:
            write(fut.result())


def write_table(folder: Path):
    """Rebuild ``labels.parquet`` from the journal (last row per item wins); returns the DataFrame."""
    import pandas as pd

    rows = read_journal(folder)
    if not rows:
        return pd.DataFrame(columns=["item_id", "status"])
    df = pd.DataFrame(rows).drop_duplicates("item_id", keep="last").sort_values("item_id", kind="stable")
    df = df.reset_index(drop=True)
    flat = df.copy()
    for col in ("audiogram_db_hl", "kinds", "steps", "seed_noise"):
        if col in flat:
            flat[col] = flat[col].map(json.dumps)
    tmp = Path(folder) / (TABLE + ".tmp")
    flat.to_parquet(tmp, index=False)
    os.replace(tmp, Path(folder) / TABLE)
    return df


def load_labels(folder: Path, *, splits=None, ok_only: bool = True):
    """The label table as a DataFrame (from the journal), optionally only some splits."""
    import pandas as pd

    rows = read_journal(folder)
    if not rows:
        raise BenchError(f"{folder} has no labels yet ({LABELS}); run `bench haaqinet make-data`")
    df = pd.DataFrame(rows).drop_duplicates("item_id", keep="last").sort_values("item_id", kind="stable")
    if ok_only:
        df = df[df["status"] == "ok"]
    if splits is not None:
        df = df[df["split"].isin(list(splits))]
    return df.reset_index(drop=True)


def histogram(labels, bins: int = 10) -> list[tuple[float, float, int]]:
    """``(low, high, count)`` for ``bins`` equal bins of 0..1."""
    counts, edges = np.histogram(np.clip(np.asarray(labels, dtype=float), 0, 1), bins=bins, range=(0.0, 1.0))
    return [(round(float(edges[i]), 6), round(float(edges[i + 1]), 6), int(c)) for i, c in enumerate(counts)]


def summarise(df, *, seconds: float = 0.0, total: int | None = None) -> dict:
    ok = df[df["status"] == "ok"] if len(df) else df
    return {
        "items": int(len(df)), "ok": int(len(ok)), "errors": int(len(df) - len(ok)), "total": total,
        "seconds": round(seconds, 1),
        "per_split": {s: int((ok["split"] == s).sum()) for s in SPLITS} if len(ok) else {},
        "histogram": histogram(ok["haaqi"]) if len(ok) else [],
    }


# -- model inputs -----------------------------------------------------------------------------
def _regenerate(args) -> np.ndarray:
    folder, recipe, row = args
    _WORKER.setdefault("sources", {})
    clean = clean_excerpt(Path(folder), recipe, row, _WORKER["sources"])
    x, _ = synthesise(row, clean)
    x16 = to_model_rate(x)
    save_input(folder, row["item_id"], x16)
    return x16


def model_inputs(folder: Path, df, *, workers: int = 1, progress=None) -> np.ndarray:
    """The 16-kHz judged signals of the items in ``df``: float32 (n_items, n_samples).

    Read from ``cache/wave16k``; missing ones are regenerated from the rows and cached.
    """
    folder = Path(folder)
    recipe = read_recipe(folder)
    n = round(recipe["item_s"] * MODEL_RATE_HZ)
    out = np.zeros((len(df), n), dtype=np.float32)
    missing = []
    rows = df.to_dict("records")
    for i, row in enumerate(rows):
        path = folder / "cache" / "wave16k" / f"{row['item_id']}.npy"
        if path.is_file():
            x = np.load(path)
            out[i, :min(n, x.size)] = x[:n]
        else:
            missing.append(i)
    if missing:
        jobs = [(str(folder), recipe, rows[i]) for i in missing]
        if workers > 1:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")  # safe after CUDA has started in this process
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(str(folder), recipe, False)) as ex:
                results = ex.map(_regenerate, jobs, chunksize=8)
                for k, (i, x) in enumerate(zip(missing, results)):
                    out[i, :min(n, x.size)] = x[:n]
                    if progress:
                        progress(k + 1, len(missing))
        else:
            for k, (i, job) in enumerate(zip(missing, jobs)):
                x = _regenerate(job)
                out[i, :min(n, x.size)] = x[:n]
                if progress:
                    progress(k + 1, len(missing))
    return out


def audiogram_array(df) -> np.ndarray:
    """float32 (n_items, 8) dB HL at the standard frequencies."""
    return np.asarray(df["audiogram_db_hl"].tolist(), dtype=np.float32).reshape(len(df), 8)
