"""A PNG of training loss and held-apart F1 (and pixel IoU, for the pixel stage) per epoch."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: the function container has no display
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(history: list[dict], path: Path, label: str) -> Path:
    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(epochs, [r["train_loss"] for r in history], "o-", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    ax2.plot(epochs, [r["val_f1"] for r in history], "s-", color="tab:green", label="val F1")
    if all("val_pixel_iou" in r for r in history):
        ax2.plot(epochs, [r["val_pixel_iou"] for r in history], "^-", color="tab:purple",
                 label="val pixel IoU")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("F1 / IoU")
    fig.legend(loc="lower center", ncol=3, fontsize=8)
    ax.set_title(f"{label}: training")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
