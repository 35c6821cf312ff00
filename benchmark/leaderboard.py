"""The leaderboard: a pure function of a results table -> Markdown.

Processor configurations are ranked by mean HAAQI over all scored trials.
The 95 % confidence interval is a cluster bootstrap over clips (trials of
one clip are correlated, so clips are resampled, not rows), with a fixed
generator so the same table always gives the same Markdown. Cells per SPL
and per hearing-loss severity show the mean and, in brackets, n.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.audiogram import SEVERITY_ORDER
from benchmark.errors import BenchError

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


def _cell(values: pd.Series) -> str:
    return f"{values.mean():.3f} ({len(values)})" if len(values) else "–"


def _fmt_spl(spl: float) -> str:
    return f"{spl:g} dB"


def render(table: pd.DataFrame, *, title: str = "HAAQI leaderboard", command: str | None = None) -> str:
    """Markdown leaderboard of a results table (deterministic for a given table)."""
    if table.empty or "status" not in table:
        raise BenchError("the results table is empty: nothing to rank")
    ok = table[table["status"] == "ok"]
    if ok.empty:
        raise BenchError("no trial in this table has a score (all failed); see the error column")
    ranks = ranking(table)
    spls = sorted(ok["spl_db"].unique())
    severities = [s for s in SEVERITY_ORDER if s in set(ok["severity"])]

    lines = [f"# {title}", ""]
    lines += _provenance(table)
    if command:
        lines += ["", "Regenerate with:", "", "```", command, "```"]
    lines += ["", "## Ranking by mean HAAQI", "",
              "Mean HAAQI over clips, listeners, ears and SPLs; 95 % CI by cluster bootstrap "
              f"over clips ({N_BOOTSTRAP} resamples). Cells: mean (n trials).", ""]
    if "reference" in table and (table["reference"] == "nalr").all():
        lines += ["Under the `nalr` reference convention the reference is the clean excerpt "
                  "through NAL-R for the ear, so the `nalr` processor reproduces the reference "
                  "and marks HAAQI's ceiling (about 0.999) rather than competing.", ""]
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
        f"- **Reference convention:** {uniq('reference')} (HAAQI equalisation {uniq('equalisation')})",
        f"- **HAAQI backend:** {uniq('haaqi_backend_version')}",
        f"- **HAAQI-Net:** {uniq('haaqinet_checkpoint') or 'off'}",
        f"- **haaqi-bench:** {uniq('bench_version')} (git {uniq('git_sha')}), run {uniq('run_id')}",
        f"- **Finished:** {finished}",
    ]


def _pivot(ok: pd.DataFrame, column: str, ranks: pd.DataFrame) -> list[str]:
    keys = sorted(ok[column].unique(), key=str)
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
    for column, label in ((None, "all"), ("spl_db", "SPL"), ("severity", "severity"),
                          (proc_col, "processor")):
        for _, r in agreement.by_group(table, column).iterrows():
            group = "all" if column is None else f"{label} {r['group']:g}" if column == "spl_db" \
                else f"{label} {r['group']}"
            lines.append(f"| {group} | {int(r['n'])} | {r['lcc']:.3f} | {r['srcc']:.3f} | "
                         f"{r['kendall']:.3f} | {r['mse']:.4f} |")
    system = agreement.system_rank_correlation(table)
    means = rows.groupby(proc_col)[["haaqi", "haaqinet"]].mean().sort_values("haaqi", ascending=False)
    lines += ["", f"System level ({system['n_processors']} processors): rank correlation of the "
              f"processor means, Spearman {system['spearman']:.3f}, Kendall {system['kendall']:.3f}.",
              "", "| processor | mean HAAQI | mean HAAQI-Net |", "|:---|---:|---:|"]
    lines += [f"| `{name}` | {r['haaqi']:.3f} | {r['haaqinet']:.3f} |" for name, r in means.iterrows()]
    return lines


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
