"""Put finished runs side by side: per institution and overall, with the worst institution
and the spread across institutions, so a bank can read what it gains by joining."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fedsilo.config import ConfigError
from fedsilo.results.summary import format_table


def load_summary(run_dir: Path) -> dict:
    if Path(run_dir).name.endswith((".failed", ".incomplete", ".interrupted")):
        raise ConfigError(f"compare: '{run_dir}' is not a finished run (it ended "
                          f"'{Path(run_dir).suffix}')")
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise ConfigError(f"compare: '{run_dir}' is not a finished run directory "
                          f"(no summary.json)")
    return json.loads(path.read_text())


def label_of(run_dir: Path, summary: dict) -> str:
    mode = summary.get("mode") or summary.get("strategy", {}).get("name", "federated")
    return f"{mode} ({Path(run_dir).name})"


def comparison(run_dirs: list[Path]) -> tuple[list[str], list[list], dict]:
    """(header, rows, data) of the comparison table."""
    summaries = [load_summary(d) for d in run_dirs]
    labels = [label_of(d, s) for d, s in zip(run_dirs, summaries, strict=True)]
    names: list[str] = []
    for s in summaries:
        names += [n for n in s["final"]["institutions"] if n not in names]
    header = ["institution", "kind"]
    for i in range(len(summaries)):
        header += [f"acc [{i + 1}]", f"F1 [{i + 1}]"]
    own = [i for i, s in enumerate(summaries) if "personal" in s["final"]]
    header += [f"personal acc [{i + 1}]" for i in own]  # personalised runs
    rows, data = [], {"runs": labels, "institutions": {}}
    for n in names:
        row = [n, None]
        for s in summaries:
            inst = s["final"]["institutions"].get(n, {})
            row[1] = row[1] or inst.get("kind", "-")
            row += [_num(inst.get("accuracy")), _num(inst.get("macro_f1"))]
        data["institutions"][n] = row[2:]
        for i in own:
            p = summaries[i]["final"]["institutions"].get(n, {}).get("personal") or {}
            row.append(_num(p.get("accuracy")))
        rows.append(row)
    overall = ["ALL (federation-wide test)", "-"]
    worst = ["worst institution", "-"]
    spread = ["spread (best - worst)", "-"]
    for s in summaries:
        accs = [v["accuracy"] for v in s["final"]["institutions"].values()
                if v.get("accuracy") is not None]  # unsampled in the last evaluation
        overall += [s["final"]["global"]["accuracy"], s["final"]["global"]["macro_f1"]]
        worst += [min(accs) if accs else None, None]
        spread += [max(accs) - min(accs) if accs else None, None]
    data.update({"overall": overall[2:], "worst": worst[2::2], "spread": spread[2::2]})
    overall += [summaries[i]["final"]["personal"]["accuracy"] for i in own]
    worst += [None] * len(own)
    spread += [None] * len(own)
    rows += [overall, worst, spread]
    return header, [[("-" if c is None else c) for c in r] for r in rows], data


def _num(v) -> float:
    return float("nan") if v is None else v


def compare(run_dirs: list[Path], out_png: Path | None = None) -> str:
    header, rows, data = comparison(run_dirs)
    legend = "\n".join(f"[{i + 1}] {lab}" for i, lab in enumerate(data["runs"]))
    text = (legend + "\n\n" + format_table(rows, header) + "\n\nAccuracy and macro-F1 of "
            "each institution on its own test split. Local-only runs: each institution's "
            "own model; their ALL row is the mean of those models on the federation-wide "
            "test set.")
    if out_png is not None:
        plot(data, out_png)
    return text


def plot(data: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(data["institutions"]) + ["ALL"]
    runs = data["runs"]
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names)), 4.2 + 0.25 * len(runs)))
    x = np.arange(len(names))
    for j, run in enumerate(runs):
        ys = [data["institutions"][n][2 * j] for n in names[:-1]] + [data["overall"][2 * j]]
        ax.bar(x + (j - (len(runs) - 1) / 2) * width, ys, width, label=run)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy (own test split; ALL: federation-wide)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def personal_gains(run: dict, local: dict) -> dict:
    """What each institution gains by joining: its local-only model, the shared model and
    its own (personalised) model on its own test split, from a run's summary and the
    local-only baseline's; the gain is the personal model's accuracy minus local-only's."""
    out: dict = {"institutions": {}, "losers": []}
    for name, inst in run["final"]["institutions"].items():
        alone = local["final"]["institutions"].get(name)
        own = inst.get("personal")
        if alone is None or inst.get("accuracy") is None:
            continue
        used = own or inst  # the model the institution would use
        gain = used["accuracy"] - alone["accuracy"]
        out["institutions"][name] = {
            "kind": inst["kind"],
            "local": {"accuracy": alone["accuracy"], "macro_f1": alone["macro_f1"]},
            "shared": {"accuracy": inst["accuracy"], "macro_f1": inst["macro_f1"]},
            "personal": None if own is None else {"accuracy": own["accuracy"],
                                                  "macro_f1": own["macro_f1"]},
            "gain_accuracy": gain,
            "gain_macro_f1": used["macro_f1"] - alone["macro_f1"]}
        if gain < 0:
            out["losers"].append(name)
    return out


def gains_table(g: dict) -> str:
    """The gain table, and one sentence on who gains."""
    rows = []
    for name, v in g["institutions"].items():
        p = v["personal"] or {}
        rows.append([name, v["kind"], v["local"]["accuracy"], v["shared"]["accuracy"],
                     p.get("accuracy", "-"), v["local"]["macro_f1"], v["shared"]["macro_f1"],
                     p.get("macro_f1", "-"), f"{100 * v['gain_accuracy']:+.1f}"])
    text = format_table(rows, ["institution", "kind", "local acc", "shared acc", "personal acc",
                               "local F1", "shared F1", "personal F1", "gain (points)"])
    insts = g["institutions"]
    if not insts:
        return text + "\nno institution could be compared with its local-only model"
    if g["losers"]:
        worst = min(g["losers"], key=lambda n: insts[n]["gain_accuracy"])
        verdict = (f"{len(g['losers'])} of {len(insts)} institutions would have done better "
                   f"alone: {', '.join(g['losers'])} (worst: {worst}, "
                   f"{100 * insts[worst]['gain_accuracy']:+.1f} points of accuracy against "
                   f"its local-only model)")
    else:
        least = min(insts, key=lambda n: insts[n]["gain_accuracy"])
        verdict = (f"no institution does worse than training alone (least gain: {least}, "
                   f"{100 * insts[least]['gain_accuracy']:+.1f} points of accuracy)")
    return text + "\n" + verdict
