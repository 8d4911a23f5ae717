"""PNG figures of a survival model's evaluation (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tessera.atomic import atomic_path  # noqa: E402

DPI = 110


def _save(fig, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def km_groups(curves: dict[int, dict], p_value: float | None, title: str, path: str | os.PathLike) -> None:
    """Kaplan–Meier curves (with 95 % bands) of the risk groups; group 1 = lowest predicted risk."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    n_groups = len(curves)
    colours = plt.cm.coolwarm(np.linspace(0.1, 0.9, max(n_groups, 2)))
    for (g, c), colour in zip(sorted(curves.items()), colours):
        t = np.r_[0.0, c["time"]]
        ax.step(t, np.r_[1.0, c["survival"]], where="post", color=colour, label=f"risk group {g}")
        ax.fill_between(t, np.r_[1.0, c["lower"]], np.r_[1.0, c["upper"]], step="post", color=colour, alpha=0.15)
    ax.set(xlabel="days", ylabel="survival probability", ylim=(0, 1.02), title=title)
    if p_value is not None:
        ax.text(0.98, 0.95, f"log-rank p = {p_value:.2g}", ha="right", va="top", transform=ax.transAxes)
    ax.legend(loc="lower left", frameon=False)
    _save(fig, path)


def td_auc(curve: dict, title: str, path: str | os.PathLike) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(curve["time"], curve["auc"], marker="o")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="days", ylabel="cumulative/dynamic AUC", ylim=(0, 1), title=title)
    _save(fig, path)


def brier(curve: dict, title: str, path: str | os.PathLike) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(curve["time"], curve["brier"], marker="o")
    ax.set(xlabel="days", ylabel="Brier score", ylim=(0, max(0.3, float(np.max(curve["brier"])) * 1.1)), title=title)
    _save(fig, path)


def calibration(rows: list[dict], horizon: float, title: str, path: str | os.PathLike) -> None:
    """Observed (Kaplan–Meier, 95 % CI) against mean predicted survival at the horizon, per group."""
    df = pd.DataFrame(rows).dropna(subset=["observed"])
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    if len(df):
        err = np.vstack([df["observed"] - df["observed_lower"], df["observed_upper"] - df["observed"]])
        ax.errorbar(df["predicted"], df["observed"], yerr=np.clip(err, 0, None), fmt="o", capsize=3)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=f"predicted survival at {horizon:g} d",
           ylabel=f"observed survival at {horizon:g} d", title=title)
    _save(fig, path)


def training(histories: list[tuple[str, list[dict]]], title: str, path: str | os.PathLike) -> None:
    """Training (and inner-validation) loss per epoch, one line per fold."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, hist in histories:
        df = pd.DataFrame(hist)
        line, = ax.plot(df["epoch"], df["train_loss"], lw=1, label=label)
        if "val_loss" in df:
            ax.plot(df["epoch"], df["val_loss"], lw=1, ls="--", color=line.get_color())
    ax.set(xlabel="epoch", ylabel="NLL (dashed: inner validation)", title=title)
    if len(histories) <= 10:
        ax.legend(fontsize=7, frameon=False)
    _save(fig, path)


def summary(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Pooled out-of-fold Harrell's and Uno's C per model with bootstrap 95 % intervals."""
    fig, ax = plt.subplots(figsize=(6.5, 0.5 * len(table) + 1.5))
    y = np.arange(len(table))[::-1]
    for offset, col, label in ((0.12, "c_harrell", "Harrell's C"), (-0.12, "c_uno", "Uno's C")):
        mean = table[col].astype(float)
        lo, hi = table[f"{col}_lower"].astype(float), table[f"{col}_upper"].astype(float)
        ax.errorbar(mean, y + offset, xerr=np.vstack([mean - lo, hi - mean]).clip(0), fmt="o", capsize=3, label=label)
    ax.axvline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_yticks(y, table["model"])
    ax.set(xlabel="out-of-fold C-index (95 % bootstrap CI)", xlim=(0.2, 1.0))
    ax.legend(frameon=False, fontsize=8)
    _save(fig, path)


def not_available(title: str, reason: str, path: str | os.PathLike) -> None:
    """A figure that says why there is nothing to plot (the workflow's file set stays fixed)."""
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{title}\n\nnot available: {reason}", ha="center", va="center", wrap=True)
    _save(fig, path)
