"""SPL robustness study: HAAQI-Net against HAAQI at 45, 50, ..., 85 dB SPL on held-out items.

The study set is built from a ``make-data`` set's ``test`` split (pieces and audiograms never used in
training; ``split="val"`` builds one from the validation split instead, for choosing between models without
looking at the test split): ``n_groups`` seeded groups (all their items: one excerpt, one ear, several
conditions), each item *relabelled* at every level of ``spls``. An item at level L is the data set's own signal chain with
the excerpt presented at L dB SPL (:func:`haaqinet.data.synthesise`: degradations, the hearing aid at that
level, post-aid degradations), labelled with HAAQI against NAL-R of the clean excerpt (equalisation 2,
the item's HAAQI seed; the project's reference convention, as in ``make-data``). The relabelled set (labels
and 16-kHz inputs) is cached under ``<data>/cache/spl-study/``, so further checkpoints cost only their
predictions.

Each checkpoint predicts every (item, level); the report gives LCC, SRCC and MSE per level, per level and
WHO severity grade (:func:`benchmark.audiogram.severity_of` of the ear's PTA), per grade over all levels,
and the gap between the best and the worst level's LCC (goal: at most :data:`GOAL_GAP`) with its
bootstrap interval over the study's groups (:func:`gap_interval`).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np

from benchmark.errors import BenchError

SPLS_DB = tuple(range(45, 90, 5))
#: Goal of the issue: the worst level's LCC within this of the best level's.
GOAL_GAP = 0.03
#: Bootstrap resamples of the study's groups for the gap's interval.
N_BOOT = 1000
TABLE_COLUMNS = ("checkpoint", "spl_db", "severity", "n", "lcc", "srcc", "mse")


# -- building the relabelled set ---------------------------------------------------------------
def study_rows(data_folder: Path, *, n_groups: int, seed: int = 0, split: str = "test") -> list[list[dict]]:
    """The labelled rows of ``n_groups`` seeded groups of ``split``, grouped (lists of item rows)."""
    from haaqinet import data

    df = data.load_labels(data_folder, splits=[split])
    if df.empty:
        raise BenchError(f"{data_folder} has no labelled {split} items")
    groups = sorted(set(df["group"]))
    if n_groups < 1:
        raise BenchError("--n-groups must be at least 1")
    pick = np.random.default_rng([seed, 59]).permutation(len(groups))[:n_groups]
    chosen = sorted(groups[i] for i in pick)
    return [df[df["group"] == g].to_dict("records") for g in chosen]


def _label_job(args) -> list[dict]:
    """Relabel one group at one level: [{item_id, spl_db, haaqi | error, judged_db_spl, x16}]."""
    from haaqinet import data

    rows, spl = args
    folder, recipe = data._WORKER["folder"], data._WORKER["recipe"]
    backend = data._WORKER.get("backend") or recipe["haaqi_backend"]
    clean, audiogram, reference = data.item_reference(folder, recipe, rows[0], data._WORKER.setdefault("sources", {}))
    judged = []
    for row in rows:
        x, level1 = data.synthesise({**row, "spl_db": float(spl)}, clean)
        judged.append((row, x, level1))
    scores = data._score(reference, [x for _, x, _ in judged], audiogram, judged[0][2], rows[0]["seed_haaqi"],
                         backend)
    out = []
    for (row, x, level1), score in zip(judged, scores):
        base = {"item_id": row["item_id"], "spl_db": float(spl)}
        if isinstance(score, Exception) or not np.all(np.isfinite(x)) or data._rms(x) < 1e-9:
            out.append({**base, "error": f"{type(score).__name__}: {score}" if isinstance(score, Exception)
                        else "silent or non-finite signal"})
            continue
        out.append({**base, "haaqi": float(score.haaqi), "level1_db_spl": level1,
                    "judged_db_spl": level1 + 20.0 * math.log10(data._rms(x)), "x16": data.to_model_rate(x)})
    return out


def _study_key(recipe: dict, groups: list[list[dict]], spls, backend: str, backend_version: str) -> str:
    from haaqinet.train import recipe_hash

    key = {"recipe": recipe_hash(recipe), "items": [r["item_id"] for g in groups for r in g],
           "spls": [float(s) for s in spls], "backend": backend, "backend_version": backend_version,
           "version": 1}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def build_study(data_folder: Path, *, n_groups: int = 25, spls=SPLS_DB, seed: int = 0, split: str = "test",
                workers: int = 1, haaqi_backend: str | None = None, progress=None, log=print):
    """The relabelled study set: (table of items x levels, float32 inputs (n, n_samples), info dict).

    Cached in ``<data>/cache/spl-study/<key>.npz`` (key: recipe, items, levels, backend and its version).
    """
    import pandas as pd

    from benchmark.audiogram import severity_of
    from haaqinet import data

    data_folder = Path(data_folder)
    recipe = data.read_recipe(data_folder)
    backend = haaqi_backend or recipe["haaqi_backend"]
    groups = study_rows(data_folder, n_groups=n_groups, seed=seed, split=split)
    if len(groups) < n_groups:
        log(f"warning: {data_folder} has only {len(groups)} labelled {split} groups, not the {n_groups} asked "
            f"for; the study uses those {len(groups)} (label the data set with make-data for more)")
    spls = [float(s) for s in spls]
    for s in spls:
        from benchmark.calibration import check_spl

        check_spl(s)
    from benchmark.haaqi import backend_version

    version = backend_version(backend)
    key = _study_key(recipe, groups, spls, backend, version)
    cache = data_folder / "cache" / "spl-study" / f"{key}.npz"
    items = {r["item_id"]: r for g in groups for r in g}
    info = {"key": key, "n_groups": len(groups), "n_items": len(items), "spls_db": spls, "seed": seed,
            "split": split, "haaqi_backend": backend, "haaqi_backend_version": version, "recipe_sha256_16": None,
            "cached": cache.is_file()}
    from haaqinet.train import recipe_hash

    info["recipe_sha256_16"] = recipe_hash(recipe)
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            table = pd.DataFrame({k: z[k] for k in z.files if k != "x16"})
            x16 = z["x16"]
        log(f"study set from the cache {cache} ({len(table)} labels)")
    else:
        jobs = [(g, s) for g in groups for s in spls]
        results, t0 = [], time.perf_counter()
        data._init_worker(str(data_folder), recipe, False, backend)
        if workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            results += _label_job(jobs[0])  # compiles numba before forking
            if progress:
                progress(len(jobs[0][0]), len(jobs) * len(jobs[0][0]))
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=data._init_worker,
                                     initargs=(str(data_folder), recipe, False, backend)) as ex:
                for res in ex.map(_label_job, jobs[1:]):
                    results += res
                    if progress:
                        progress(len(results), sum(len(g) for g, _ in jobs))
        else:
            for job in jobs:
                results += _label_job(job)
                if progress:
                    progress(len(results), sum(len(g) for g, _ in jobs))
        errors = [r for r in results if "error" in r]
        if errors:
            log(f"{len(errors)} of {len(results)} labels failed (left out), e.g. {errors[0]['error']}")
        ok = [r for r in results if "error" not in r]
        if not ok:
            raise BenchError(f"every label of the SPL study failed, e.g. {errors[0]['error'] if errors else '?'}")
        n = round(recipe["item_s"] * data.MODEL_RATE_HZ)
        x16 = np.zeros((len(ok), n), np.float32)
        for i, r in enumerate(ok):
            x16[i, :min(n, r["x16"].size)] = r["x16"][:n]
        table = pd.DataFrame([{k: v for k, v in r.items() if k != "x16"} for r in ok])
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.stem}.tmp.npz")
        columns = {c: np.asarray(table[c].to_numpy()) for c in table.columns}
        np.savez(tmp, x16=x16, **{c: v.astype(str) if v.dtype.kind == "O" else v for c, v in columns.items()})
        tmp.replace(cache)
        info["label_seconds"] = round(time.perf_counter() - t0, 1)
        log(f"labelled {len(ok)} items x levels in {info['label_seconds']:.0f} s; cached in {cache}")
    table = table.assign(
        audiogram=[items[i]["audiogram"] for i in table["item_id"]],
        audiogram_db_hl=[items[i]["audiogram_db_hl"] for i in table["item_id"]],
        pta_db_hl=[items[i]["pta_db_hl"] for i in table["item_id"]],
        severity=[severity_of(items[i]["pta_db_hl"]) for i in table["item_id"]],
        condition=[items[i]["condition"] for i in table["item_id"]],
        group=[items[i]["group"] for i in table["item_id"]],
        original_spl_db=[items[i]["spl_db"] for i in table["item_id"]],
    )
    return table, x16, info


# -- evaluation ---------------------------------------------------------------------------------
def study_table(df, *, label: str) -> "pd.DataFrame":  # noqa: F821
    """Long table: one row per level x (all grades and each grade), columns :data:`TABLE_COLUMNS`."""
    import pandas as pd

    from benchmark.audiogram import SEVERITY_ORDER
    from haaqinet.evaluate import agreement

    rows = []
    for spl, part in sorted(df.groupby("spl_db")):
        groups = [("all", part)] + [(s, part[part["severity"] == s]) for s in SEVERITY_ORDER]
        for sev, g in groups:
            if len(g) == 0:
                continue
            m = agreement(g["haaqi"], g["haaqinet"])
            rows.append({"checkpoint": label, "spl_db": float(spl), "severity": sev, "n": m["n"], "lcc": m["lcc"],
                         "srcc": m["srcc"], "mse": m["mse"]})
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def summarise(table, df, *, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Best and worst level by LCC (all grades), their gap, the goal, the pooled statistics, and the gap's
    bootstrap interval (:func:`gap_interval`)."""
    from haaqinet.evaluate import agreement

    per = table[table["severity"] == "all"].set_index("spl_db")
    best, worst = per["lcc"].idxmax(), per["lcc"].idxmin()
    gap = float(per.loc[best, "lcc"] - per.loc[worst, "lcc"])
    return {"best_spl_db": float(best), "best_lcc": float(per.loc[best, "lcc"]), "worst_spl_db": float(worst),
            "worst_lcc": float(per.loc[worst, "lcc"]), "gap": gap, "goal_gap": GOAL_GAP,
            "goal_met": bool(gap <= GOAL_GAP), **gap_interval(df, n_boot=n_boot, seed=seed),
            "pooled": agreement(df["haaqi"], df["haaqinet"]),
            "per_severity": {s: agreement(g["haaqi"], g["haaqinet"]) for s, g in df.groupby("severity")}}


def gap_interval(df, *, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """How far sampling moves the gap: a bootstrap over the study's groups.

    Every group (one excerpt and ear, all its conditions) is relabelled at every
    level, so groups are resampled whole, keeping the levels paired. Returns the
    2.5 and 97.5 percentiles of the gap (best minus worst level LCC) over
    ``n_boot`` resamples (``gap_ci95``), the standard error of each level's LCC
    (``lcc_se``, by level), and the share of resamples whose gap is within the
    goal (``share_within_goal``). With 50 groups (200 items per level) a
    level's LCC has a standard error of about 0.02, so the largest of nine such
    estimates minus the smallest is biased upward: a model whose accuracy did
    not depend on level would still show a gap.
    """
    spl = df["spl_db"].to_numpy(float)
    h, p = df["haaqi"].to_numpy(float), df["haaqinet"].to_numpy(float)
    levels = np.unique(spl)
    _, group = np.unique(df["group"].to_numpy(), return_inverse=True)
    members = [np.flatnonzero(group == g) for g in range(group.max() + 1)]
    rng = np.random.default_rng([seed, 61])
    lcc = np.empty((n_boot, levels.size))
    for b in range(n_boot):
        take = np.concatenate([members[g] for g in rng.integers(len(members), size=len(members))])
        for j, level in enumerate(levels):
            at = take[spl[take] == level]
            lcc[b, j] = np.corrcoef(h[at], p[at])[0, 1] if at.size > 2 else np.nan
    gaps = np.nanmax(lcc, axis=1) - np.nanmin(lcc, axis=1)
    return {"gap_ci95": [float(np.percentile(gaps, 2.5)), float(np.percentile(gaps, 97.5))],
            "share_within_goal": float(np.mean(gaps <= GOAL_GAP)), "n_boot": int(n_boot),
            "lcc_se": {float(level): float(np.nanstd(lcc[:, j], ddof=1)) for j, level in enumerate(levels)}}


def run_study(checkpoints, data_folder: Path, *, n_groups: int = 25, spls=SPLS_DB, seed: int = 0,
              split: str = "test", workers: int = 1, haaqi_backend: str | None = None, device: str = "cpu",
              progress=None, log=print, input_level: bool = True):
    """Build (or load) the study set and evaluate every checkpoint on it.

    ``input_level``: networks that take the clean music's presentation level get the study's level (as
    ``bench run`` gives its ``--spl``); False: they judge with it unknown.

    Returns:
        dict: ``info`` (study set), ``table`` (long DataFrame of all checkpoints), ``checkpoints``
        ({label: {path, sha256_12, n_parameters, summary}}), ``items`` (DataFrame with a column per checkpoint).
    """
    import pandas as pd

    from haaqinet.checkpoint import load_checkpoint
    from haaqinet.model import count_parameters
    from haaqinet.predict import CHECKPOINT_NAMES, predict_arrays, resolve_checkpoint

    table, x16, info = build_study(data_folder, n_groups=n_groups, spls=spls, seed=seed, split=split,
                                   workers=workers, haaqi_backend=haaqi_backend, progress=progress, log=log)
    audiograms = np.asarray(table["audiogram_db_hl"].tolist(), dtype=np.float32)
    spl_in = table["judged_db_spl"].to_numpy(np.float32)
    music_spl = table["spl_db"].to_numpy(np.float32) if input_level else np.full(len(table), np.nan, np.float32)
    tables, out = [], {}
    for ck in checkpoints:
        path = resolve_checkpoint(ck)
        model = load_checkpoint(path, map_location=device)
        label = str(ck) if str(ck) in CHECKPOINT_NAMES else path.name
        t0 = time.perf_counter()
        pred = predict_arrays(model, x16, audiograms, spl_in, batch_size=32, device=device, input_spl_db=music_spl)
        df = table.assign(haaqinet=pred)
        t = study_table(df, label=label)
        tables.append(t)
        table[f"haaqinet:{label}"] = pred
        out[label] = {"path": str(path), "file": path.name,
                      "sha256_12": hashlib.sha256(path.read_bytes()).hexdigest()[:12],
                      "n_parameters": count_parameters(model),
                      "input_level": ("given" if input_level else "withheld") if getattr(model, "input_level", False)
                      else "not an input",
                      "predict_seconds": round(time.perf_counter() - t0, 1),
                      "summary": summarise(t, df)}
        s = out[label]["summary"]
        verdict = "met" if s["goal_met"] else "missed"
        log(f"{label}: LCC best {s['best_lcc']:.4f} at {s['best_spl_db']:g} dB, worst {s['worst_lcc']:.4f} at "
            f"{s['worst_spl_db']:g} dB, gap {s['gap']:.4f} (goal <= {GOAL_GAP}: {verdict}; 95 % interval "
            f"{s['gap_ci95'][0]:.3f}-{s['gap_ci95'][1]:.3f})")
    return {"info": info, "table": pd.concat(tables, ignore_index=True), "checkpoints": out, "items": table}


# -- output ---------------------------------------------------------------------------------------
def format_markdown(result: dict, *, command: str, git_sha: str | None, plot_name: str | None = None) -> str:
    """The leaderboard page: provenance, per-level table, level x grade LCC, per-grade table."""
    from benchmark.audiogram import SEVERITY_ORDER

    info, table = result["info"], result["table"]
    labels = list(result["checkpoints"])
    held_out = {"test": "test split: pieces and audiograms never used in training",
                "val": "validation split: pieces and audiograms never used in training, used to choose models"}
    lines = ["# HAAQI-Net SPL robustness study", "",
             f"HAAQI-Net against HAAQI on held-out items ({held_out.get(info['split'], info['split'] + ' split')}), "
             "each item relabelled with HAAQI at every presentation level. Goal: the worst level's LCC within "
             f"{GOAL_GAP} of the best level's (the paper's accuracy peaked at 65 dB SPL and fell away from it).", "",
             "## Provenance", "",
             f"- command: `{command}`",
             f"- study set: {info['n_items']} items ({info['n_groups']} groups of the `{info['split']}` split, seed "
             f"{info['seed']}) x {len(info['spls_db'])} levels ({', '.join(f'{s:g}' for s in info['spls_db'])} dB SPL) "
             f"= {len(result['items'])} labels; HAAQI backend `{info['haaqi_backend']}` "
             f"({info.get('haaqi_backend_version', '?')}), reference NAL-R, "
             f"equalisation 2; data recipe {info['recipe_sha256_16']}; study key {info['key']}",
             f"- source commit: {git_sha or 'unknown'}"]
    for label, c in result["checkpoints"].items():
        lines.append(f"- checkpoint `{label}`: {c['file']} sha256 {c['sha256_12']}, {c['n_parameters']:,} parameters; "
                     f"the clean music's presentation level: {c.get('input_level', 'not an input')}")
    lines += ["", "## Summary", "", "| checkpoint | best level (LCC) | worst level (LCC) | gap | goal <= "
              f"{GOAL_GAP} | gap 95 % interval | resamples within goal | pooled LCC | pooled SRCC | pooled MSE |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for label, c in result["checkpoints"].items():
        s = c["summary"]
        verdict = "met" if s["goal_met"] else f"missed by {s['gap'] - GOAL_GAP:.3f}"
        lo, hi = s["gap_ci95"]
        lines.append(f"| {label} | {s['best_spl_db']:g} dB ({s['best_lcc']:.3f}) | {s['worst_spl_db']:g} dB "
                     f"({s['worst_lcc']:.3f}) | {s['gap']:.3f} | {verdict} | {lo:.3f}-{hi:.3f} | "
                     f"{100 * s['share_within_goal']:.0f} % | "
                     f"{s['pooled']['lcc']:.3f} | {s['pooled']['srcc']:.3f} | {s['pooled']['mse']:.4f} |")
    se = [v for c in result["checkpoints"].values() for v in c["summary"]["lcc_se"].values()]
    n_boot = next(iter(result["checkpoints"].values()))["summary"]["n_boot"]
    lines += ["", f"The interval comes from {n_boot} bootstrap resamples of the study's {info['n_groups']} groups "
              "(each group whole, at every level). A level's LCC has a standard error of "
              f"{min(se):.3f}-{max(se):.3f} here, so the best of {len(info['spls_db'])} levels minus the worst is biased "
              "upward: "
              "a model whose accuracy did not depend on level would still show a gap. More groups "
              "(`--n-groups`) narrow it."]
    if plot_name:
        lines += ["", f"![LCC against presentation level]({plot_name})"]
    lines += ["", "## Per level (all grades)", "", "| level (dB SPL) | n | HAAQI mean (sd) | " + " | ".join(
        f"{lab} LCC | {lab} SRCC | {lab} MSE" for lab in labels) + " |",
        "|---|---|---|" + "---|---|---|" * len(labels)]
    alls = table[table["severity"] == "all"]
    items = result["items"]
    for spl in sorted(set(alls["spl_db"])):
        h = items.loc[items["spl_db"] == spl, "haaqi"]
        cells = []
        for lab in labels:
            r = alls[(alls["checkpoint"] == lab) & (alls["spl_db"] == spl)].iloc[0]
            cells.append(f"{r['lcc']:.3f} | {r['srcc']:.3f} | {r['mse']:.4f}")
            n = int(r["n"])
        lines.append(f"| {spl:g} | {n} | {h.mean():.3f} ({h.std():.3f}) | " + " | ".join(cells) + " |")
    for lab in labels:
        part = table[(table["checkpoint"] == lab) & (table["severity"] != "all")]
        sevs = [s for s in SEVERITY_ORDER if s in set(part["severity"])]
        spls = sorted(set(part["spl_db"]))
        lines += ["", f"## LCC per level and severity grade: {lab}", "",
                  "| grade (n per level) | " + " | ".join(f"{s:g}" for s in spls) + " |",
                  "|---|" + "---|" * len(spls)]
        for sev in sevs:
            rows = part[part["severity"] == sev].set_index("spl_db")
            n = int(rows["n"].iloc[0])
            cells = ["-" if spl not in rows.index or not math.isfinite(rows.loc[spl, "lcc"])
                     else f"{rows.loc[spl, 'lcc']:.3f}" for spl in spls]
            lines.append(f"| {sev} ({n}) | " + " | ".join(cells) + " |")
        s = result["checkpoints"][lab]["summary"]["per_severity"]
        lines += ["", f"Pooled over levels ({lab}):", "", "| grade | n | LCC | SRCC | MSE |", "|---|---|---|---|---|"]
        for sev in sevs:
            m = s[sev]
            lines.append(f"| {sev} | {m['n']} | {m['lcc']:.3f} | {m['srcc']:.3f} | {m['mse']:.4f} |")
    lines += ["", "The HAAQI mean (sd) column is the label distribution at each level: where it is the same, a lower "
              "LCC (with a higher MSE) is lower accuracy, not a narrower range of labels. The full table (every "
              "level x grade, LCC, SRCC, MSE, n) is in the CSV beside this page. Within a grade there are few "
              "items per level (one or a few listeners), so those correlations are noisy."]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> Path:
    """LCC against level for every checkpoint (left) and per grade for the first one (right), PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmark.audiogram import SEVERITY_ORDER

    table = result["table"]
    labels = list(result["checkpoints"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    for lab in labels:
        part = table[(table["checkpoint"] == lab) & (table["severity"] == "all")].sort_values("spl_db")
        axes[0].plot(part["spl_db"], part["lcc"], marker="o", label=lab)
    axes[0].set_xlabel("presentation level (dB SPL)")
    axes[0].set_ylabel("LCC with HAAQI")
    axes[0].set_title("all grades")
    axes[0].grid(alpha=0.3)
    axes[0].legend()
    first = table[(table["checkpoint"] == labels[0]) & (table["severity"] != "all")]
    for sev in SEVERITY_ORDER:
        part = first[first["severity"] == sev].sort_values("spl_db")
        if len(part):
            axes[1].plot(part["spl_db"], part["lcc"], marker=".", label=f"{sev} (n={int(part['n'].iloc[0])})")
    axes[1].set_xlabel("presentation level (dB SPL)")
    axes[1].set_title(f"per severity grade: {labels[0]}")
    axes[1].grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _source_state() -> str | None:
    """The commit of the source tree, marked when the working tree has uncommitted changes."""
    import subprocess

    from haaqinet.checkpoint import git_commit

    sha = git_commit()
    if sha is None:
        return None
    try:
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return sha
    return f"{sha} (with uncommitted changes)" if dirty else sha


def write_outputs(result: dict, out_dir: Path, *, command: str, stem: str = "haaqinet-spl-study") -> dict:
    """``<stem>.md``, ``.png``, ``.csv`` (long table) and ``.json`` (summaries and provenance) in ``out_dir``."""
    sha = _source_state()           # before writing: the outputs may be tracked files themselves
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = plot(result, out_dir / f"{stem}.png")
    (out_dir / f"{stem}.md").write_text(format_markdown(result, command=command, git_sha=sha, plot_name=png.name),
                                       encoding="utf-8")
    result["table"].to_csv(out_dir / f"{stem}.csv", index=False, float_format="%.5f")
    doc = {"command": command, "git_commit": sha, "info": result["info"], "checkpoints": result["checkpoints"]}
    (out_dir / f"{stem}.json").write_text(json.dumps(doc, indent=1, default=float) + "\n", encoding="utf-8")
    return {k: str(out_dir / f"{stem}.{k}") for k in ("md", "png", "csv", "json")}
