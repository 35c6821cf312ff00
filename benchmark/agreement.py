"""Agreement between HAAQI-Net predictions and HAAQI: pure functions of a results table."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Least standard deviation of HAAQI over a group for its correlations to mean anything: below it HAAQI is
#: nearly constant (e.g. ``nalr`` under the ``nalr`` reference convention: 0.999 +/- 0.0003), and a
#: correlation with it would measure noise.
MIN_HAAQI_SD = 0.01


def stats(haaqi: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """LCC, SRCC, Kendall tau and MSE of predictions against HAAQI.

    The correlations are NaN (undefined) for fewer than 3 trials, a constant prediction, or HAAQI
    spread less than :data:`MIN_HAAQI_SD`; the MSE is defined for any n > 0.
    """
    from scipy import stats as st

    x, y = np.asarray(haaqi, float), np.asarray(predicted, float)
    out = {"n": int(x.size), "lcc": np.nan, "srcc": np.nan, "kendall": np.nan,
           "mse": float(np.mean((x - y) ** 2)) if x.size else np.nan}
    if x.size >= 3 and np.std(x) >= MIN_HAAQI_SD and np.std(y) > 0:
        out["lcc"] = float(st.pearsonr(x, y)[0])
        out["srcc"] = float(st.spearmanr(x, y)[0])
        out["kendall"] = float(st.kendalltau(x, y)[0])
    return out


def scored(table: pd.DataFrame) -> pd.DataFrame:
    """Rows with both a HAAQI score and a HAAQI-Net prediction."""
    if "haaqinet" not in table:
        return table.iloc[0:0]
    ok = table[(table["status"] == "ok")]
    return ok[ok["haaqinet"].notna() & ok["haaqi"].notna()]


def by_group(table: pd.DataFrame, column: str | None) -> pd.DataFrame:
    """Agreement statistics overall (``column=None``) or per value of ``column``."""
    rows = scored(table)
    if column is None:
        return pd.DataFrame([{"group": "all", **stats(rows["haaqi"], rows["haaqinet"])}])
    out = [{"group": key, **stats(g["haaqi"], g["haaqinet"])}
           for key, g in rows.groupby(column, sort=True)]
    return pd.DataFrame(out)


def system_rank_correlation(table: pd.DataFrame) -> dict[str, float]:
    """Spearman and Kendall correlation of the processor rankings by HAAQI and by HAAQI-Net."""
    from scipy import stats as st

    rows = scored(table)
    means = rows.groupby("processor_id")[["haaqi", "haaqinet"]].mean()
    if len(means) < 3:
        return {"n_processors": len(means), "spearman": np.nan, "kendall": np.nan}
    return {"n_processors": len(means),
            "spearman": float(st.spearmanr(means["haaqi"], means["haaqinet"])[0]),
            "kendall": float(st.kendalltau(means["haaqi"], means["haaqinet"])[0])}
