"""The PNG plots a run directory holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_accuracy(run_dir: Path, rows: list[dict], max_lines: int = 10) -> Path | None:
    """accuracy.png: accuracy against rounds, overall and per institution.

    Up to ``max_lines`` institutions get a line each (banks solid, hospitals dashed); with
    more, each kind gets its median and a band from its worst to its best institution.
    """
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rounds = [r["round"] for r in rows]
    kinds = {n: v.get("kind") for r in rows for n, v in r["institutions"].items()}

    def acc(name: str) -> list[float]:
        values = [r["institutions"].get(name, {}).get("accuracy") for r in rows]
        return [np.nan if v is None else v for v in values]

    fig, ax = plt.subplots(figsize=(8, 4.5))
    if len(kinds) <= max_lines:
        for name, kind in kinds.items():
            ax.plot(rounds, acc(name), "--" if kind == "hospital" else "-", marker="o",
                    markersize=3, linewidth=1.2, label=name)
        title = "accuracy per institution (banks solid, hospitals dashed)"
    else:
        for kind, color in (("bank", "tab:blue"), ("hospital", "tab:red")):
            names = [n for n, k in kinds.items() if k == kind]
            if not names:
                continue
            ys = np.array([acc(n) for n in names])
            ax.fill_between(rounds, np.nanmin(ys, 0), np.nanmax(ys, 0), color=color,
                            alpha=0.15, label=f"{kind}s: worst to best ({len(names)})")
            ax.plot(rounds, np.nanmedian(ys, 0), color=color, linewidth=1.5,
                    label=f"{kind}s: median")
        title = f"accuracy of {len(kinds)} institutions"
    ax.plot(rounds, [r["global"]["accuracy"] for r in rows], color="black", linewidth=2.5,
            label="global (union of test splits)")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(title)
    fig.tight_layout()
    path = run_dir / "accuracy.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
