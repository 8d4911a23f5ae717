"""The report's figures as PNG bytes (matplotlib's object API: no pyplot state, no display needed)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from tessera.explain.association import KMSplit
from tessera.explain.cluster_maps import hex_colour


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _top(table: pd.DataFrame, top: int) -> pd.DataFrame:
    return table[table["spearman_rho"].notna()].sort_values("rank").head(top)


def association_bars(table: pd.DataFrame, colours: dict, top: int = 20) -> bytes:
    """Spearman ρ with risk of the ``top`` ranked clusters (bars in the clusters' map colours)."""
    rows = _top(table, top)
    fig = Figure(figsize=(7, 0.32 * max(len(rows), 3) + 1.2))
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    ax.barh(y, rows["spearman_rho"], color=[hex_colour(colours[int(c)]) for c in rows.index])
    ax.set_yticks(y, [f"#{r} · cluster {c}" for c, r in zip(rows.index, rows["rank"])])
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlim(-1, 1)
    ax.set_xlabel("Spearman ρ of prevalence with out-of-fold risk")
    ax.set_title("Clusters ranked by association with the model's risk")
    return _png(fig)


def forest(table: pd.DataFrame, top: int = 20) -> bytes:
    """Univariate Cox hazard ratio per SD of prevalence with 95 % CI, ranked clusters, log scale."""
    rows = _top(table, top).dropna(subset=["cox_ci_low", "cox_ci_high"])
    fig = Figure(figsize=(7, 0.32 * max(len(rows), 3) + 1.2))
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    hr = rows["cox_hr_per_sd"].to_numpy()
    err = np.vstack([hr - rows["cox_ci_low"].to_numpy(), rows["cox_ci_high"].to_numpy() - hr])
    ax.errorbar(hr, y, xerr=err, fmt="o", color="#333333", ecolor="#777777", capsize=3)
    ax.axvline(1, color="black", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(y, [f"cluster {c}" for c in rows.index])
    ax.set_xlabel("hazard ratio per SD of prevalence (95 % CI)")
    ax.set_title("Univariate Cox models")
    return _png(fig)


def km_grid(curves: dict[int, KMSplit], table: pd.DataFrame, top: int = 6) -> bytes:
    """Kaplan–Meier curves of high vs low prevalence for the ``top`` ranked clusters."""
    rows = [c for c in _top(table, top).index if c in curves]
    cols = 3
    n_rows = max(1, -(-len(rows) // cols))
    fig = Figure(figsize=(4 * cols, 3.2 * n_rows))
    for i, c in enumerate(rows):
        ax = fig.add_subplot(n_rows, cols, i + 1)
        km = curves[c]
        for name, colour in (("high", "#c0392b"), ("low", "#2471a3")):
            if name in km.curves:
                t, s = km.curves[name]
                n = km.n_high if name == "high" else km.n_low
                ax.step(np.concatenate([[0], t]), np.concatenate([[1], s]), where="post", color=colour,
                        label=f"{name} (n={n})")
        p = "n/a" if np.isnan(km.p) else f"{km.p:.2g}"
        ax.set_title(f"cluster {c} (rank {int(table.loc[c, 'rank'])}): log-rank p = {p}", fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("days")
        ax.set_ylabel("survival")
        ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return _png(fig)


def r2_bars(r2: pd.DataFrame) -> bytes:
    """Cross-validated R² of the model's risk by cluster fractions, clinical covariates, and both."""
    fig = Figure(figsize=(6, 2.6))
    ax = fig.add_subplot()
    values = r2["cv_r2"].fillna(0).to_numpy()
    ax.barh(np.arange(len(r2))[::-1], values, color=["#8e44ad", "#7f8c8d", "#2c3e50"][: len(r2)])
    ax.set_yticks(np.arange(len(r2))[::-1], r2["features"])
    for y, v, raw in zip(np.arange(len(r2))[::-1], values, r2["cv_r2"]):
        ax.text(max(v, 0) + 0.01, y, "n/a" if np.isnan(raw) else f"{raw:.2f}", va="center")
    ax.set_xlim(min(0, values.min() - 0.05), 1.1)
    ax.set_xlabel("cross-validated R² of out-of-fold risk")
    return _png(fig)
