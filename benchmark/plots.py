"""Plots: pure functions of a results table -> PNG files.

* ``haaqi_vs_spl.png``: mean HAAQI against SPL, one line per processor, with
  95 % cluster-bootstrap CIs over clips; one panel per listening condition
  when the run has several (clean and noisy trials are never averaged together).
* ``heatmap_processor_audiogram.png``: mean HAAQI, processors × audiograms
  (the title says so when several listening conditions are pooled).
* ``heatmap_processor_condition.png``: mean HAAQI, processors × listening
  conditions (only when the run has several).
* ``haaqi_vs_snr.png``: mean HAAQI against SNR, one panel per noise type, one
  line per processor, the clean mean as a dashed line (only for noisy runs).
* ``agreement_haaqinet_vs_haaqi.png``: HAAQI-Net against HAAQI per SPL, with
  LCC, SRCC and MSE on each panel (when the run has HAAQI-Net predictions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.errors import BenchError
from benchmark.leaderboard import bootstrap_ci, condition_order, ranking, with_conditions


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _spl_panel(ax, table: pd.DataFrame, ranks: pd.DataFrame) -> None:
    ok = table[table["status"] == "ok"]
    for i, (_, r) in enumerate(ranks.iterrows()):
        sub = ok[ok["processor_id"] == r["processor_id"]]
        spls = sorted(sub["spl_db"].unique())
        means = [sub[sub["spl_db"] == s].groupby("clip_id")["haaqi"].mean().mean() for s in spls]
        cis = np.array([bootstrap_ci(sub[sub["spl_db"] == s]) for s in spls])
        line = ax.plot(spls, means, marker="o", label=r["processor"], color=f"C{i % 10}")[0]
        if len(spls):
            ax.fill_between(spls, cis[:, 0], cis[:, 1], alpha=0.15, color=line.get_color())
    ax.set_xticks(sorted(ok["spl_db"].unique()))
    ax.set_xlabel("presentation level (dB SPL)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)


def plot_haaqi_vs_spl(table: pd.DataFrame, path: Path) -> Path:
    plt = _pyplot()
    table = with_conditions(table)
    ranks = ranking(table)  # one order and colour per processor in every panel
    conditions = condition_order(table[table["status"] == "ok"])
    n = len(conditions)
    fig, axes = plt.subplots(1, n, figsize=(6.5 if n == 1 else 3.4 * n, 4.2), dpi=120,
                             squeeze=False, sharey=True)
    for ax, condition in zip(axes[0], conditions):
        _spl_panel(ax, table[table["condition"] == condition], ranks)
        if n > 1:
            ax.set_title(condition, fontsize=9)
    axes[0][0].set_ylabel("mean HAAQI")
    axes[0][-1].legend(fontsize=8 if n == 1 else 6)
    fig.suptitle("HAAQI against presentation level (95% CI over clips)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_heatmap(table: pd.DataFrame, path: Path, column: str = "audiogram") -> Path:
    """Mean HAAQI, processors × values of ``column`` ("audiogram" or "condition")."""
    plt = _pyplot()
    table = with_conditions(table)
    ok = table[table["status"] == "ok"]
    order = ranking(table)
    if column == "audiogram":
        keys = ok.groupby("audiogram")["pta_db_hl"].mean().sort_values().index.tolist()
        xlabel = "audiogram (by increasing PTA)"
    else:
        keys, xlabel = condition_order(ok), "listening condition"
    grid = np.full((len(order), len(keys)), np.nan)
    for i, pid in enumerate(order["processor_id"]):
        for j, key in enumerate(keys):
            vals = ok[(ok["processor_id"] == pid) & (ok[column] == key)]["haaqi"]
            if len(vals):
                grid[i, j] = vals.mean()
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(keys), 1.2 + 0.45 * len(order)), dpi=120)
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(keys)), keys, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(order)), order["processor"], fontsize=8)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if grid[i, j] < 0.6 else "black")
    ax.set_xlabel(xlabel)
    if column == "audiogram" and ok["condition"].nunique() > 1:
        ax.set_title("all listening conditions pooled", fontsize=8)
    fig.colorbar(im, ax=ax, label="mean HAAQI")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_haaqi_vs_snr(table: pd.DataFrame, path: Path) -> Path | None:
    """Mean HAAQI against SNR per noise type (None when the run has no noisy trial)."""
    table = with_conditions(table)
    ok = table[table["status"] == "ok"]
    noisy = ok[ok["scenario"] != "clean"]
    if noisy.empty:
        return None
    plt = _pyplot()
    ranks = ranking(table)
    noises = list(dict.fromkeys(noisy.drop_duplicates("condition").set_index("condition")
                                .loc[condition_order(noisy), "noise"]))
    fig, axes = plt.subplots(1, len(noises), figsize=(3.4 * len(noises) + 0.8, 4.0), dpi=120,
                             squeeze=False, sharey=True)
    clean = ok[ok["scenario"] == "clean"]
    for ax, noise in zip(axes[0], noises):
        for i, (_, r) in enumerate(ranks.iterrows()):
            sub = noisy[(noisy["noise"] == noise) & (noisy["processor_id"] == r["processor_id"])]
            snrs = sorted(sub["snr_db"].unique())
            means = [sub[sub["snr_db"] == s].groupby("clip_id")["haaqi"].mean().mean() for s in snrs]
            ax.plot(snrs, means, marker="o", color=f"C{i % 10}", label=r["processor"])
            ref = clean[clean["processor_id"] == r["processor_id"]]
            if len(ref):
                ax.axhline(ref.groupby("clip_id")["haaqi"].mean().mean(), color=f"C{i % 10}",
                           ls="--", lw=0.8)
        ax.set_xticks(sorted(noisy[noisy["noise"] == noise]["snr_db"].unique()))
        ax.set_title(noise, fontsize=9)
        ax.set_xlabel("SNR (dB)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean HAAQI")
    axes[0][-1].legend(fontsize=6)
    fig.suptitle("HAAQI against SNR (dashed: clean)" if len(clean) else "HAAQI against SNR",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_agreement(table: pd.DataFrame, path: Path) -> Path | None:
    """HAAQI-Net against HAAQI, one panel per SPL, with LCC/SRCC/MSE on each panel."""
    from benchmark import agreement

    rows = agreement.scored(table)
    if rows.empty:
        return None
    plt = _pyplot()
    spls = sorted(rows["spl_db"].unique())
    fig, axes = plt.subplots(1, len(spls), figsize=(3.2 * len(spls), 3.4), dpi=120, squeeze=False)
    for ax, spl in zip(axes[0], spls):
        sub = rows[rows["spl_db"] == spl]
        for name, g in sub.groupby("processor", sort=True):
            ax.scatter(g["haaqi"], g["haaqinet"], s=10, alpha=0.6, label=name)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        st = agreement.stats(sub["haaqi"], sub["haaqinet"])
        corr = ("LCC, SRCC: -\n(n < 3 or HAAQI ~ constant)" if np.isnan(st["lcc"])
                else f"LCC {st['lcc']:.3f}\nSRCC {st['srcc']:.3f}")
        ax.text(0.03, 0.97, f"{corr}\nMSE {st['mse']:.4f}\nn {st['n']}", transform=ax.transAxes, va="top",
                fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{spl:g} dB SPL", fontsize=9)
        ax.set_xlabel("HAAQI")
    axes[0][0].set_ylabel("HAAQI-Net")
    axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_all(table: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Write every plot of a results table into ``out_dir``; returns the paths."""
    if table.empty or not (table.get("status") == "ok").any():
        raise BenchError("no scored trials to plot")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    several = with_conditions(table)["condition"].nunique() > 1
    paths = [plot_haaqi_vs_spl(table, out / "haaqi_vs_spl.png"),
             plot_heatmap(table, out / "heatmap_processor_audiogram.png"),
             plot_heatmap(table, out / "heatmap_processor_condition.png", "condition")
             if several else None,
             plot_haaqi_vs_snr(table, out / "haaqi_vs_snr.png"),
             plot_agreement(table, out / "agreement_haaqinet_vs_haaqi.png")]
    return [p for p in paths if p is not None]
