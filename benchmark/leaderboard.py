"""The leaderboard: a pure function of a results table -> Markdown.

Processor configurations are ranked by mean HAAQI over all scored trials.
The 95 % confidence interval is a cluster bootstrap over clips (trials of
one clip are correlated, so clips are resampled, not rows), with a fixed
generator so the same table always gives the same Markdown. Cells per SPL
and per hearing-loss severity show the mean and, in brackets, n.

A table with several listening conditions (clean and noisy scenarios, noise
types, SNRs) gets a processors × conditions table and a ranking per value of
each condition column that varies ("By scenario", "By noise", "By SNR"), or
per value of the columns asked for with ``by`` (``bench leaderboard --by``).
A clean-only table renders as it did before noisy scenarios existed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.audiogram import SEVERITY_ORDER
from benchmark.errors import BenchError
from benchmark.noise import NOISE_TYPES

N_BOOTSTRAP = 2000
BOOTSTRAP_SEED = 20240101


def bootstrap_ci(table: pd.DataFrame, value: str = "haaqi", cluster: str = "clip_id",
                 *, n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """95 % percentile CI of the mean of per-cluster means, resampling clusters."""
    means = table.groupby(cluster, sort=True)[value].mean().to_numpy()
    if means.size == 0:
        return (float("nan"), float("nan"))
    if means.size == 1:
        return (float(means[0]), float(means[0]))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, means.size, size=(n_boot, means.size))
    boot = means[idx].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(lo), float(hi)


def ranking(table: pd.DataFrame, value: str = "haaqi") -> pd.DataFrame:
    """One row per processor configuration: mean, CI, n, errors; sorted best first."""
    ok = table[table["status"] == "ok"]
    rows = []
    for pid, group in table.groupby("processor_id", sort=True):
        scored = ok[ok["processor_id"] == pid]
        mean = scored.groupby("clip_id")[value].mean().mean() if len(scored) else float("nan")
        lo, hi = bootstrap_ci(scored, value)
        label = group["processor_label"].iloc[0] if "processor_label" in group else pid
        rows.append({"processor_id": pid, "processor": label, "mean": mean, "ci_low": lo,
                     "ci_high": hi, "n": len(scored), "errors": int((group["status"] != "ok").sum())})
    out = pd.DataFrame(rows)
    out = out.sort_values(["mean", "processor_id"], ascending=[False, True], na_position="last")
    return out.reset_index(drop=True)


#: What identifies a trial, less its processor: the trials of two processors are paired on these.
TRIAL_COLUMNS = ("clip_id", "listener", "ear", "spl_db", "scenario", "noise", "snr_db")


def paired_difference(table: pd.DataFrame, a: str, b: str, value: str = "haaqi") -> dict:
    """Processor ``a`` minus ``b`` (processor ids) on the trials both scored, paired on :data:`TRIAL_COLUMNS`.

    Returns the mean difference (the mean over clips of each clip's mean, as :func:`ranking` averages), its
    95 % cluster-bootstrap CI over clips, the number of paired trials and the share of them where ``a``
    scored higher.
    """
    ok = table[table["status"] == "ok"]
    cols = [c for c in TRIAL_COLUMNS if c in ok]
    pairs = pd.merge(ok.loc[ok["processor_id"] == a, [*cols, value]],
                     ok.loc[ok["processor_id"] == b, [*cols, value]], on=cols, suffixes=("_a", "_b"))
    pairs["difference"] = pairs[f"{value}_a"] - pairs[f"{value}_b"]
    if pairs.empty:
        nan = float("nan")
        return {"mean": nan, "ci_low": nan, "ci_high": nan, "n": 0, "a_higher": nan}
    lo, hi = bootstrap_ci(pairs, "difference")
    return {"mean": float(pairs.groupby("clip_id")["difference"].mean().mean()), "ci_low": lo, "ci_high": hi,
            "n": len(pairs), "a_higher": float((pairs["difference"] > 0).mean())}


def find_processor(table: pd.DataFrame, name: str) -> str:
    """The processor id of ``name`` (an id, or a label that names one configuration)."""
    ids = sorted(table["processor_id"].unique())
    if name in ids:
        return name
    labels = table.drop_duplicates("processor_id").set_index("processor_id")["processor_label"] \
        if "processor_label" in table else pd.Series(ids, index=ids)
    matches = sorted(labels.index[labels == name])
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise BenchError(f"{name!r} names {len(matches)} configurations ({', '.join(matches)}); give its id")
    raise BenchError(f"no processor {name!r} in this table; it has {', '.join(sorted(set(labels)))}")


#: ``--by`` names -> (table column, heading).
GROUPINGS = {"scenario": ("scenario", "scenario"), "noise": ("noise", "noise"),
             "snr": ("snr_db", "SNR"), "condition": ("condition", "listening condition"),
             "spl": ("spl_db", "SPL"), "severity": ("severity", "severity"),
             "audiogram": ("audiogram", "audiogram")}


def check_by(names) -> tuple[str, ...]:
    """Validate ``--by`` names (see :data:`GROUPINGS`; ``snr_db``/``spl_db`` also accepted)."""
    from benchmark.registry_util import did_you_mean

    out = []
    for name in names:
        name = {"snr_db": "snr", "spl_db": "spl"}.get(name, name)
        if name not in GROUPINGS:
            raise BenchError(f"cannot group by {name!r}{did_you_mean(name, GROUPINGS)}; "
                             f"choose from {', '.join(GROUPINGS)}")
        out.append(name)
    return tuple(dict.fromkeys(out))


def with_conditions(table: pd.DataFrame) -> pd.DataFrame:
    """A copy with ``scenario``, ``noise``, ``snr_db`` filled for clean rows and a ``condition`` label.

    Rows without these columns (tables from before noisy scenarios) are clean.
    """
    from benchmark.sweep import Condition

    t = table.copy()
    t["scenario"] = t["scenario"].fillna("clean") if "scenario" in t else "clean"
    t["noise"] = t["noise"].fillna("none") if "noise" in t else "none"
    t["snr_db"] = pd.to_numeric(t["snr_db"], errors="coerce") if "snr_db" in t else np.nan
    keys = list(zip(t["scenario"], t["noise"], t["snr_db"]))
    labels = {k: Condition(k[0], k[1], None if k[0] == "clean" else k[2]).label for k in set(keys)}
    t["condition"] = [labels[k] for k in keys]
    return t


def _condition_sort_key(scenario: str, noise: str, snr_db: float) -> tuple:
    noise_rank = list(NOISE_TYPES).index(noise) if noise in NOISE_TYPES else len(NOISE_TYPES)
    return (scenario != "clean", noise_rank, noise, -np.inf if pd.isna(snr_db) else snr_db)


def condition_order(table: pd.DataFrame) -> list[str]:
    """Condition labels of a :func:`with_conditions` table: clean first, then by noise and SNR."""
    combos = table[["scenario", "noise", "snr_db", "condition"]].drop_duplicates("condition")
    combos = sorted(combos.itertuples(index=False), key=lambda r: _condition_sort_key(*r[:3]))
    return [r[3] for r in combos]


def _cell(values: pd.Series) -> str:
    return f"{values.mean():.3f} ({len(values)})" if len(values) else "–"


def _fmt_spl(spl: float) -> str:
    return f"{spl:g} dB"


def render(table: pd.DataFrame, *, title: str = "HAAQI leaderboard", command: str | None = None,
           by=None, run_command: str | None = None, against: str | None = None) -> str:
    """Markdown leaderboard of a results table (deterministic for a given table).

    Args:
        by: ``--by`` names (:data:`GROUPINGS`) to rank within each value of;
            None: the condition columns that vary.
        run_command: the ``bench run`` command(s) that made the table (run.json), shown first.
        against: a processor (id or label) every other one is compared with, paired trial by trial;
            None: each processor against the next in the ranking.
    """
    if table.empty or "status" not in table:
        raise BenchError("the results table is empty: nothing to rank")
    by = check_by(by) if by is not None else None
    table = with_conditions(table)
    ok = table[table["status"] == "ok"]
    if ok.empty:
        raise BenchError("no trial in this table has a score (all failed); see the error column")
    against = find_processor(table, against) if against is not None else None
    ranks = ranking(table)
    spls = sorted(ok["spl_db"].unique())
    severities = [s for s in SEVERITY_ORDER if s in set(ok["severity"])]

    conditions = condition_order(table)
    noisy = (table["scenario"] != "clean").any()

    lines = [f"# {title}", ""]
    lines += _provenance(table)
    made = [c for c in (run_command, command) if c]
    if made:
        lines += ["", "Regenerate with:", "", "```", *made, "```"]
    over = ("clips, listeners, ears, SPLs and listening conditions (all pooled; see the "
            "sections per condition below)") if len(conditions) > 1 else "clips, listeners, ears and SPLs"
    lines += ["", "## Ranking by mean HAAQI", "",
              f"Mean HAAQI over {over}; 95 % CI by cluster bootstrap over clips "
              f"({N_BOOTSTRAP} resamples). Cells: mean (n trials).", ""]
    if "reference" in table and (table["reference"] == "nalr").all():
        where = " in the clean scenario" if noisy else ""
        lines += ["Under the `nalr` reference convention the reference is the clean excerpt "
                  f"through NAL-R for the ear, so{where} the `nalr` processor reproduces the "
                  "reference and marks HAAQI's ceiling (about 0.999) rather than competing.", ""]
    if noisy:
        lines += ["In a noisy condition the processors receive music plus noise, and the "
                  "reference is the clean music at the same scale (docs/conventions.md), so the "
                  "noise a processor passes on lowers its score.", ""]
    header = ["Rank", "Processor", "HAAQI", "95% CI"] + [_fmt_spl(s) for s in spls] + severities + ["n", "errors"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---:", ":---", "---:", ":---:"] + ["---:"] * (len(header) - 4)) + "|")
    for i, r in ranks.iterrows():
        scored = ok[ok["processor_id"] == r["processor_id"]]
        cells = [str(i + 1), f"`{r['processor']}`", f"{r['mean']:.3f}",
                 f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"]
        cells += [_cell(scored[scored["spl_db"] == s]["haaqi"]) for s in spls]
        cells += [_cell(scored[scored["severity"] == s]["haaqi"]) for s in severities]
        cells += [str(r["n"]), str(r["errors"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _paired_section(table, ranks, against)
    if len(conditions) > 1:
        lines += ["", "## Per listening condition", ""]
        lines += _pivot(ok, "condition", ranks, keys=conditions)
    for name in (by if by is not None else _auto_by(table)):
        lines += _by_section(table, name)
    lines += ["", "## Per audiogram", ""]
    lines += _pivot(ok, "audiogram", ranks)
    lines += _agreement(table)
    lines += _configs(table)
    lines += _failures(table)
    return "\n".join(lines) + "\n"


def _provenance(table: pd.DataFrame) -> list[str]:
    def uniq(col):
        return ", ".join(str(v) for v in sorted(table[col].dropna().unique())) if col in table else "?"

    finished = table["finished_at"].dropna().max() if "finished_at" in table else "?"
    audiograms = sorted(table["audiogram"].unique()) if "audiogram" in table else []
    return [
        f"- **Corpus:** {uniq('corpus')} (manifest {uniq('corpus_manifest_hash')[:12]}), "
        f"{table['clip_id'].nunique()} clips",
        f"- **Listeners:** {table['listener'].nunique()} ({', '.join(map(str, audiograms))})",
        f"- **SPL:** {', '.join(f'{s:g}' for s in sorted(table['spl_db'].unique()))} dB SPL",
        *_conditions_line(table),
        f"- **Reference convention:** {uniq('reference')} (HAAQI equalisation {uniq('equalisation')})",
        f"- **HAAQI backend:** {uniq('haaqi_backend_version')}",
        f"- **HAAQI-Net:** {uniq('haaqinet_checkpoint') or 'off'}",
        f"- **haaqi-bench:** {uniq('bench_version')} (git {uniq('git_sha')}), run {uniq('run_id')}",
        f"- **Finished:** {finished}",
    ]


def _conditions_line(table: pd.DataFrame) -> list[str]:
    noisy = table[table["scenario"] != "clean"]
    if noisy.empty:
        return []
    scenarios = ", ".join(s for s in ("clean", "noisy") if (table["scenario"] == s).any())
    noises = ", ".join(n for n in NOISE_TYPES if n in set(noisy["noise"]))
    noises = noises or ", ".join(sorted(map(str, noisy["noise"].unique())))
    snrs = ", ".join(f"{s:g}" for s in sorted(noisy["snr_db"].dropna().unique()))
    return [f"- **Scenarios:** {scenarios}; noise {noises} at {snrs} dB SNR"]


def _auto_by(table: pd.DataFrame) -> list[str]:
    """The condition columns that vary (noise and SNR among the noisy trials)."""
    noisy = table[table["scenario"] != "clean"]
    out = ["scenario"] if table["scenario"].nunique() > 1 else []
    out += ["noise"] if noisy["noise"].nunique() > 1 else []
    out += ["snr"] if noisy["snr_db"].nunique() > 1 else []
    return out


def _group_keys(table: pd.DataFrame, column: str) -> list:
    values = table[column].drop_duplicates().tolist()
    if column == "condition":
        return [c for c in condition_order(table) if c in set(values)]
    if column == "severity":
        return [s for s in SEVERITY_ORDER if s in set(values)]
    if column == "noise":
        return sorted(values, key=lambda n: _condition_sort_key("x", n, 0.0))
    if column in ("snr_db", "spl_db"):
        return sorted(values, key=lambda v: -np.inf if pd.isna(v) else v)
    return sorted(values, key=lambda v: (v != "clean", str(v)))


def _key_label(column: str, key) -> str:
    if column == "snr_db":
        return "clean (no noise)" if pd.isna(key) else f"{key:g} dB"
    if column == "spl_db":
        return f"{key:g} dB"
    return str(key)


def _by_section(table: pd.DataFrame, name: str) -> list[str]:
    """A ranking (mean, CI, n) within each value of one grouping column."""
    column, heading = GROUPINGS[name]
    rows, note = table, ""
    if column in ("noise", "snr_db") and (table["scenario"] != "clean").any():
        rows = table[table["scenario"] != "clean"]
        if (table["scenario"] == "clean").any():
            note = "Noisy trials only (clean trials have no noise and no SNR)."
    lines = ["", f"## By {heading}", ""] + ([note, ""] if note else [])
    for key in _group_keys(rows, column):
        sub = rows[rows[column].isna()] if pd.isna(key) else rows[rows[column] == key]
        if not (sub["status"] == "ok").any():
            continue
        lines += [f"### {heading}: {_key_label(column, key)}", "",
                  "| Rank | Processor | HAAQI | 95% CI | n | errors |",
                  "|---:|:---|---:|:---:|---:|---:|"]
        for i, r in ranking(sub).iterrows():
            lines.append(f"| {i + 1} | `{r['processor']}` | {r['mean']:.3f} | "
                         f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {r['n']} | {r['errors']} |")
        lines.append("")
    return lines[:-1] if lines[-1] == "" else lines


def _paired_section(table: pd.DataFrame, ranks: pd.DataFrame, against: str | None) -> list[str]:
    """Paired differences: each processor against ``against``, or against the next in the ranking."""
    ids = ranks["processor_id"].tolist()
    if len(ids) < 2:
        return []
    label = dict(zip(ranks["processor_id"], ranks["processor"]))
    if against is None:
        pairs = list(zip(ids[:-1], ids[1:]))
        whom = "the next one in the ranking"
    else:
        pairs = [(pid, against) for pid in ids if pid != against]
        whom = f"`{label[against]}`"
    lines = ["", "## Paired differences", "",
             f"Each processor against {whom}, on the trials both scored (the same clip, listener, ear, SPL "
             "and condition): the mean HAAQI difference over clips, its 95 % CI by cluster bootstrap over "
             "clips, and the share of paired trials where the first scored higher. An interval that excludes "
             "0 separates the pair; each interval holds for its own comparison (no correction for "
             "multiple comparisons).", "",
             "| Processor | vs | difference | 95% CI | higher on | pairs |", "|:---|:---|---:|:---:|---:|---:|"]
    for a, b in pairs:
        d = paired_difference(table, a, b)
        if not d["n"]:
            lines.append(f"| `{label[a]}` | `{label[b]}` | - | - | - | 0 |")
            continue
        lines.append(f"| `{label[a]}` | `{label[b]}` | {d['mean']:+.3f} | "
                     f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] | {100 * d['a_higher']:.0f} % | {d['n']} |")
    return lines


def _pivot(ok: pd.DataFrame, column: str, ranks: pd.DataFrame, keys=None) -> list[str]:
    keys = sorted(ok[column].unique(), key=str) if keys is None else keys
    lines = ["| Processor | " + " | ".join(map(str, keys)) + " |",
             "|:---|" + "---:|" * len(keys)]
    for _, r in ranks.iterrows():
        scored = ok[ok["processor_id"] == r["processor_id"]]
        lines.append(f"| `{r['processor']}` | " +
                     " | ".join(_cell(scored[scored[column] == k]["haaqi"]) for k in keys) + " |")
    return lines


def _agreement(table: pd.DataFrame) -> list[str]:
    from benchmark import agreement

    rows = agreement.scored(table)
    if rows.empty:
        return []
    checkpoint = ", ".join(sorted(set(map(str, rows.get("haaqinet_checkpoint", ["?"])))))
    lines = ["", "## Agreement of HAAQI-Net with HAAQI", "",
             f"Non-intrusive HAAQI-Net predictions ({checkpoint}) against the intrusive HAAQI of "
             "the same trials. LCC: Pearson; SRCC: Spearman; MSE on the 0–1 scale.", "",
             "| group | n | LCC | SRCC | Kendall τ | MSE |", "|:---|---:|---:|---:|---:|---:|"]
    proc_col = "processor_label" if "processor_label" in rows else "processor_id"
    groupings = [(None, "all"), ("spl_db", "SPL"), ("severity", "severity"),
                 (proc_col, "processor")]
    if "condition" in table and table["condition"].nunique() > 1:
        groupings.insert(1, ("condition", "condition"))
    undefined = False
    for column, label in groupings:
        for _, r in agreement.by_group(table, column).iterrows():
            group = "all" if column is None else f"{label} {r['group']:g}" if column == "spl_db" \
                else f"{label} {r['group']}"
            undefined |= bool(np.isnan(r["lcc"]))
            lines.append(f"| {group} | {int(r['n'])} | {_stat(r['lcc'])} | {_stat(r['srcc'])} | "
                         f"{_stat(r['kendall'])} | {r['mse']:.4f} |")
    if undefined:
        lines += ["", f"–: no correlation, because the group has fewer than 3 trials or HAAQI barely varies "
                  f"in it (standard deviation below {agreement.MIN_HAAQI_SD:g}), so a correlation would "
                  "measure noise; the MSE still holds."]
    system = agreement.system_rank_correlation(table)
    means = rows.groupby(proc_col)[["haaqi", "haaqinet"]].mean().sort_values("haaqi", ascending=False)
    if system["n_processors"] >= 3:
        verdict = (f"System level ({system['n_processors']} processors): rank correlation of the processor "
                   f"means, Spearman {system['spearman']:.3f}, Kendall {system['kendall']:.3f}.")
    else:
        verdict = (f"System level: a rank correlation of the processor means needs at least 3 processors; "
                   f"this table has {system['n_processors']}.")
    lines += ["", verdict, "", "| processor | mean HAAQI | mean HAAQI-Net |", "|:---|---:|---:|"]
    lines += [f"| `{name}` | {r['haaqi']:.3f} | {r['haaqinet']:.3f} |" for name, r in means.iterrows()]
    return lines


def _stat(value: float) -> str:
    return "–" if np.isnan(value) else f"{value:.3f}"


def _configs(table: pd.DataFrame) -> list[str]:
    lines = ["", "## Processor configurations", "", "| id | label |", "|:---|:---|"]
    for pid, group in table.groupby("processor_id", sort=True):
        label = group["processor_label"].iloc[0] if "processor_label" in group else pid
        lines.append(f"| `{pid}` | `{label}` |")
    return lines


def _failures(table: pd.DataFrame) -> list[str]:
    bad = table[table["status"] != "ok"]
    if bad.empty:
        return ["", "No failed trials."]
    lines = ["", f"## Failed trials ({len(bad)})", "", "| processor | stage | error | n |",
             "|:---|:---|:---|---:|"]
    grouped = bad.groupby(["processor_id", "error_stage", "error"], sort=True).size()
    for (pid, stage, err), n in grouped.items():
        lines.append(f"| `{pid}` | {stage} | {str(err)[:120].replace('|', '/')} | {n} |")
    return lines
