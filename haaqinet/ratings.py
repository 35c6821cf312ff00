"""Subjective ratings for fine-tuning HAAQI-Net: the CSV format, its validation, and a synthetic generator.

The format (``docs/haaqinet-finetune.md``), one row per rating::

    file,audiogram,spl_db,score[,listener][,scale][,input_spl_db]
    stimuli/a.wav,N3,65,3.8,L01,mos
    stimuli/b.flac,"10,20,30,40,50,60,60,60",72.5,61,L02,mushra

* ``file``: an audio file (wav, flac, ogg, mp3; any rate of at least 8 kHz; mono is one ear, stereo is
  judged per ear and the ears' scores averaged), relative to the CSV's folder or absolute;
* ``audiogram``: a built-in name (``N3``, ``NH``, ...) or 8 dB HL values at 250..8000 Hz, the rater's ear;
* ``spl_db``: the RMS presentation level of the file in dB SPL (20-110);
* ``score``: the rating on the declared scale;
* ``listener`` (optional): the rater, kept for reporting; ``scale`` (optional): the scale of every row;
* ``input_spl_db`` (optional; blank: unknown): the level in dB SPL at which the clean music was presented to
  the hearing aid that made the file, for networks that take it (``docs/haaqinet.md``).

The scale is declared, by ``--scale`` or a ``scale`` column holding one value: ``mos`` (1-5) or ``mushra``
(0-100). Scores are mapped to 0-1: ``(score - 1) / 4`` and ``score / 100``.

:func:`synthesise_ratings` writes a *demonstration* set (audio + ``ratings.csv``) from a ``make-data``
set, with ratings that are a known monotone, non-linear function of the HAAQI label plus listener bias and
noise (:func:`synthetic_mos`). It exists because no hearing-impaired music rating set is available
offline; real ratings are the intended input.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from benchmark.errors import BenchError

REQUIRED_COLUMNS = ("file", "audiogram", "spl_db", "score")
OPTIONAL_COLUMNS = ("listener", "scale", "input_spl_db")
#: scale name -> (lowest score, highest score, description)
SCALES = {"mos": (1.0, 5.0, "1-5 MOS"), "mushra": (0.0, 100.0, "0-100 MUSHRA-like")}
SCALE_ALIASES = {"mos": "mos", "mos5": "mos", "1-5": "mos", "acr": "mos",
                 "mushra": "mushra", "mushra100": "mushra", "0-100": "mushra"}
#: Errors listed at most in one message.
MAX_LISTED = 10


def parse_scale(name) -> str:
    """The canonical scale name (``mos`` or ``mushra``) of a declared scale; ``BenchError`` otherwise."""
    key = str(name).strip().lower()
    if key not in SCALE_ALIASES:
        raise BenchError(f"unknown rating scale {name!r}; declare mos (1-5 MOS) or mushra (0-100 MUSHRA-like)")
    return SCALE_ALIASES[key]


def to_unit(scores, scale: str) -> np.ndarray:
    """Scores on ``scale`` -> 0-1."""
    lo, hi, _ = SCALES[parse_scale(scale)]
    return (np.asarray(scores, dtype=float) - lo) / (hi - lo)


def from_unit(values, scale: str) -> np.ndarray:
    """0-1 -> scores on ``scale``."""
    lo, hi, _ = SCALES[parse_scale(scale)]
    return lo + np.asarray(values, dtype=float) * (hi - lo)


def _raise(problems: list[str], path: Path) -> None:
    if problems:
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise BenchError(f"{path}: {len(problems)} problem(s) in the ratings:\n  "
                         + "\n  ".join(problems[:MAX_LISTED]) + more)


def read_ratings(path: str | Path, *, scale: str | None = None, check_files: bool = True):
    """Read and validate a ratings CSV.

    Args:
        path: the CSV (format in the module docstring).
        scale: the declared scale; ``None`` takes it from the ``scale`` column.
        check_files: check that every audio file exists.

    Returns:
        (DataFrame with the columns of the CSV plus ``path`` (absolute), ``audiogram_db_hl`` (8 floats),
        ``target`` (the score mapped to 0-1), ``line`` (CSV line number)), canonical scale name).

    Raises:
        BenchError: unreadable file, missing columns, no or unknown or mixed scale, a score that is not a
            number or outside the scale, a missing audio file, a bad audiogram or level (all problems
            listed, with their CSV line numbers).
    """
    import pandas as pd

    from benchmark.audiogram import STANDARD_FREQUENCIES_HZ, parse_audiogram
    from benchmark.calibration import check_spl

    path = Path(path)
    if not path.is_file():
        raise BenchError(f"ratings file not found: {path}")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except Exception as exc:  # noqa: BLE001 - pandas raises many types
        raise BenchError(f"cannot read ratings file {path} as CSV: {exc}") from None
    table.columns = [str(c).strip().lower() for c in table.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise BenchError(f"{path} lacks the column(s) {missing}; a ratings CSV needs {', '.join(REQUIRED_COLUMNS)} "
                         f"(optional: {', '.join(OPTIONAL_COLUMNS)}); found {list(table.columns)}")
    if table.empty:
        raise BenchError(f"{path} has no ratings")
    declared = {parse_scale(scale)} if scale is not None else set()
    if "scale" in table.columns:
        in_file = {v.strip() for v in table["scale"] if v.strip()}
        if in_file:
            names = set()
            for v in in_file:
                try:
                    names.add(parse_scale(v))
                except BenchError as exc:
                    raise BenchError(f"{path}: {exc}") from None
            if len(names) > 1:
                raise BenchError(f"{path}: the scale column mixes {sorted(names)}; one file holds one scale")
            if declared and names != declared:
                raise BenchError(f"{path}: --scale {scale} contradicts the file's scale column ({names.pop()})")
            declared = names
    if not declared:
        raise BenchError(f"{path}: declare the score scale with --scale mos (1-5) or --scale mushra (0-100), "
                         f"or a scale column")
    scale_name = declared.pop()
    lo, hi, desc = SCALES[scale_name]
    from haaqinet.predict import check_input_spl

    problems, levels, scores, files, inputs = [], [], [], [], []
    for i, row in enumerate(table.to_dict("records")):
        line = i + 2  # the header is line 1
        try:
            inputs.append(check_input_spl(row.get("input_spl_db"), what=f"line {line}: input_spl_db"))
        except BenchError as exc:
            problems.append(str(exc))
            inputs.append(math.nan)
        text = row["score"].strip()
        try:
            score = float(text)
            if not math.isfinite(score):
                raise ValueError
            if not lo <= score <= hi:
                problems.append(f"line {line}: score {text} is outside the {desc} scale ({lo:g}-{hi:g})")
        except ValueError:
            problems.append(f"line {line}: score {text!r} is not a number")
            score = math.nan
        scores.append(score)
        try:
            spl = float(row["spl_db"])
            check_spl(spl)
        except ValueError:
            problems.append(f"line {line}: spl_db {row['spl_db']!r} is not a number (dB SPL)")
        except BenchError as exc:
            problems.append(f"line {line}: {exc}")
        try:
            a = parse_audiogram(row["audiogram"])
            levels.append([float(v) for v in a.at(STANDARD_FREQUENCIES_HZ)])
        except BenchError as exc:
            problems.append(f"line {line}: {exc}")
            levels.append([math.nan] * 8)
        name = row["file"].strip()
        if not name:
            problems.append(f"line {line}: empty file name")
            files.append("")
            continue
        f = Path(name) if Path(name).is_absolute() else path.parent / name
        if check_files and not f.is_file():
            problems.append(f"line {line}: audio file not found: {f}")
        files.append(str(f))
    _raise(problems, path)
    out = table.copy()
    out["spl_db"] = out["spl_db"].astype(float)
    out["input_spl_db"] = np.asarray(inputs, dtype=float)
    out["score"] = np.asarray(scores, dtype=float)
    out["path"] = files
    out["audiogram_db_hl"] = levels
    out["target"] = to_unit(out["score"], scale_name)
    out["line"] = np.arange(len(out)) + 2
    return out, scale_name


# -- synthetic demonstration ratings ----------------------------------------------------------
#: The demonstration's rating model: MOS = FLOOR + (CEIL - FLOOR) * logistic(SLOPE * (haaqi - MIDPOINT))
#: + listener bias (N(0, BIAS_SD)) + noise (N(0, NOISE_SD)), clipped to 1-5 and rounded to 0.1.
SYNTH = {"floor": 1.3, "ceil": 4.7, "slope": 9.0, "midpoint": 0.45, "bias_sd": 0.25, "noise_sd": 0.3}


def synthetic_mos(haaqi, *, floor=SYNTH["floor"], ceil=SYNTH["ceil"], slope=SYNTH["slope"],
                  midpoint=SYNTH["midpoint"]) -> np.ndarray:
    """The noiseless demonstration rating of a HAAQI value: a logistic with a floor and a ceiling (1-5 MOS)."""
    h = np.asarray(haaqi, dtype=float)
    return floor + (ceil - floor) / (1.0 + np.exp(-slope * (h - midpoint)))


def synthesise_ratings(data_folder: str | Path, out: str | Path, *, n_items: int = 600,
                       splits=("test", "unseen-conditions"), seed: int = 0, workers: int = 1,
                       progress=None) -> dict:
    """Write a demonstration ratings set: ``out/audio/<item>.wav`` and ``out/ratings.csv`` (1-5 MOS).

    Items are a seeded sample of ``n_items`` labelled items of ``splits`` of a ``make-data`` set (by
    default those the shipped model never trained on) whose judged level is within 20-110 dB SPL (the
    range a ratings CSV accepts); each item's judged signal (16 kHz) is written as
    a 16-bit WAV, and its rater is its listener (ear), whose bias is drawn once. Ratings follow
    :data:`SYNTH` (module docstring of :mod:`haaqinet.ratings`); ``out/synthetic.json`` records the model,
    the seed and the true noiseless ratings.

    Returns:
        a summary dict (n, path of the CSV, rating model, correlation of ratings with HAAQI).
    """
    import json

    import soundfile as sf

    from haaqinet import data

    data_folder, out = Path(data_folder), Path(out)
    from benchmark.calibration import SPL_RANGE_DB

    df = data.load_labels(data_folder, splits=list(splits))
    lo, hi = SPL_RANGE_DB  # a ratings CSV accepts these levels; amplified items can be louder
    df = df[df["judged_db_spl"].between(lo, hi)].reset_index(drop=True)
    if df.empty:
        raise BenchError(f"{data_folder} has no labelled items at {lo:g}-{hi:g} dB SPL in the splits {list(splits)}")
    if n_items < 3:
        raise BenchError("--n-items must be at least 3")
    if len(df) > n_items:
        df = df.sample(n_items, random_state=seed).sort_values("item_id").reset_index(drop=True)
    x = data.model_inputs(data_folder, df, workers=workers, progress=progress)
    rng = np.random.default_rng([seed, 41])
    listeners = sorted(set(df["audiogram"]))
    bias = dict(zip(listeners, rng.normal(0.0, SYNTH["bias_sd"], len(listeners))))
    true = synthetic_mos(df["haaqi"])
    noisy = true + np.asarray([bias[a] for a in df["audiogram"]]) + rng.normal(0.0, SYNTH["noise_sd"], len(df))
    score = np.round(np.clip(noisy, 1.0, 5.0), 1)
    audio = out / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, row in enumerate(df.to_dict("records")):
        name = f"audio/{row['item_id']}.wav"
        peak = float(np.max(np.abs(x[i]))) or 1.0
        gain = 0.9 / peak if peak > 0.9 else 1.0  # keep int16 from clipping; spl_db is the level as presented
        sf.write(str(out / name), x[i] * gain, data.MODEL_RATE_HZ, subtype="PCM_16")
        rows.append({"file": name, "audiogram": ",".join(f"{v:g}" for v in row["audiogram_db_hl"]),
                     "spl_db": round(float(row["judged_db_spl"]), 2), "score": float(score[i]),
                     "listener": row["audiogram"], "scale": "mos", "input_spl_db": float(row["spl_db"])})
    import pandas as pd

    csv = out / "ratings.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    r = float(np.corrcoef(df["haaqi"], score)[0, 1])
    meta = {"what": "synthetic demonstration ratings (not listeners): MOS = floor + (ceil - floor) * "
                    "logistic(slope * (haaqi - midpoint)) + listener bias + noise, clipped to 1-5, rounded to 0.1",
            "model": SYNTH, "seed": seed, "source": str(data_folder), "splits": list(splits), "n": len(df),
            "lcc_rating_vs_haaqi": r,
            "items": [{"item_id": i, "haaqi": float(h), "true_mos": float(t)}
                      for i, h, t in zip(df["item_id"], df["haaqi"], true)]}
    (out / "synthetic.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return {"n": len(df), "csv": str(csv), "model": SYNTH, "lcc_rating_vs_haaqi": r,
            "n_listeners": len(listeners)}
