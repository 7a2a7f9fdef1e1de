"""``fedsilo report RUN_DIR...``: one self-contained HTML page per run, or one comparing runs.

The page needs no network to open: plots are PNG images inside the page, styles are
inline. For one run it shows the scenario, the per-round curves (the federation, its worst
institution, each institution), the per-institution table, bytes and seconds per round,
the privacy report and, where the run has them, attack results. For several runs (or a
sweep directory, whose runs it reads) it overlays their curves and puts them side by side.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from fedsilo.config import ConfigError

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f7f7f7;padding:1em;overflow-x:auto;font-size:90%}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em}"""


def load_run(run_dir: Path) -> dict:
    """A finished run directory's summary, rows and config."""
    run_dir = Path(run_dir)
    if not (run_dir / "summary.json").is_file():
        raise ConfigError(f"report: '{run_dir}' is not a finished run directory (no "
                          f"summary.json)")
    from fedsilo.results.rows import read_rows

    rows = read_rows(run_dir)
    config = (run_dir / "config.toml").read_text() if (run_dir / "config.toml").is_file() \
        else ""
    return {"dir": run_dir, "name": run_dir.name, "rows": rows, "config": config,
            "summary": json.loads((run_dir / "summary.json").read_text())}


def expand(paths: list[Path]) -> tuple[list[dict], dict | None]:
    """The runs to show: run directories as given, a sweep directory as its runs; and the
    sweep's table rows if one was given."""
    runs, sweep = [], None
    for p in map(Path, paths):
        if (p / "sweep.json").is_file():
            sweep = json.loads((p / "sweep.json").read_text())
            runs += [load_run(p / r["run"]) for r in sweep["rows"] if r.get("run")]
        else:
            runs.append(load_run(p))
    if not runs:
        raise ConfigError("report: no finished run to show")
    return runs, sweep


def write_report(paths: list[Path], out: Path | None = None) -> Path:
    """Write the page; its path (by default report.html in the one run directory given,
    else ./report.html)."""
    runs, sweep = expand(paths)
    if out is None:
        single = len(paths) == 1
        out = (Path(paths[0]) / "report.html") if single else Path("report.html")
    body = _one_run(runs[0]) if len(runs) == 1 else _many(runs, sweep)
    title = runs[0]["name"] if len(runs) == 1 else f"{len(runs)} runs"
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>fedsilo: "
            f"{html.escape(title)}</title><style>{STYLE}</style></head><body>{body}"
            f"</body></html>\n")
    out.write_text(page)
    return out


# -- one run -----------------------------------------------------------------------------------
def _one_run(run: dict) -> str:
    from fedsilo.results.summary import privacy_table

    sm, rows = run["summary"], run["rows"]
    g = sm["final"]["global"]
    parts = [f"<h1>{html.escape(run['name'])}</h1>",
             f"<p>{sm.get('rounds')} rounds; final accuracy <b>{_f(g.get('accuracy'))}</b>, "
             f"macro-F1 <b>{_f(g.get('macro_f1'))}</b>"
             + (f"; wall time {sm['wall_time_s']:.1f} s" if sm.get("wall_time_s") else "")
             + (f"; resumed after round {sm['resumed_from_round']}"
                if sm.get("resumed_from_round") else "") + "</p>",
             "<h2>Accuracy per round</h2>", _img(_curves(rows)),
             "<h2>Per institution (final round, own test split)</h2>",
             _institution_table(sm)]
    if any("bytes_up" in r for r in rows):
        parts += ["<h2>Bytes and seconds per round</h2>", _img(_cost(rows)), _cost_table(rows)]
    privacy = privacy_table(sm)
    parts += ["<h2>Privacy</h2>",
              f"<pre>{html.escape(privacy)}</pre>" if privacy else
              f"<p>{html.escape((sm.get('privacy') or {}).get('note', 'none'))}</p>"]
    attacks = run["dir"] / "attacks.json"
    if attacks.is_file():  # fedsilo attack was run against it
        from fedsilo.attacks.report import attack_table

        report = json.loads(attacks.read_text())
        parts += ["<h2>Attacks</h2>", f"<pre>{html.escape(attack_table(report))}</pre>"]
        parts += [_png(run["dir"] / name) for name in ("attack_roc.png",
                                                       "attack_dp_bound.png")
                  if (run["dir"] / name).is_file()]
    parts += ["<h2>Scenario</h2>", f"<pre>{html.escape(run['config'])}</pre>"]
    return "\n".join(parts)


def _institution_table(sm: dict) -> str:
    head = "<tr><th>institution</th><th>kind</th><th>test examples</th><th>accuracy</th>" \
           "<th>macro-F1</th></tr>"
    body = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{html.escape(str(v.get('kind', '-')))}</td>"
        f"<td class='n'>{v.get('test_examples', '-')}</td>"
        f"<td class='n'>{_f(v.get('accuracy'))}</td><td class='n'>{_f(v.get('macro_f1'))}"
        f"</td></tr>" for n, v in sm["final"]["institutions"].items())
    g = sm["final"]["global"]
    body += (f"<tr><th>ALL</th><td>-</td><td class='n'>{g.get('test_examples', '-')}</td>"
             f"<td class='n'>{_f(g.get('accuracy'))}</td>"
             f"<td class='n'>{_f(g.get('macro_f1'))}</td></tr>")
    return f"<table id='institutions'>{head}{body}</table>"


def _cost_table(rows: list[dict]) -> str:
    head = "<tr><th>round</th><th>bytes up</th><th>bytes down</th><th>seconds</th></tr>"
    body = "".join(f"<tr><td class='n'>{r['round']}</td><td class='n'>{r.get('bytes_up', 0):,}"
                   f"</td><td class='n'>{r.get('bytes_down', 0):,}</td><td class='n'>"
                   f"{r.get('wall_time_s', 0):.2f}</td></tr>" for r in rows)
    return f"<table id='cost'>{head}{body}</table>"


# -- several runs ------------------------------------------------------------------------------
def _many(runs: list[dict], sweep: dict | None) -> str:
    head = "<tr><th>run</th><th>rounds</th><th>final accuracy</th><th>final macro-F1</th>" \
           "<th>worst institution</th></tr>"
    body = ""
    for run in runs:
        sm = run["summary"]
        accs = [v["accuracy"] for v in sm["final"]["institutions"].values()
                if v.get("accuracy") is not None]
        body += (f"<tr><td>{html.escape(run['name'])}</td><td class='n'>{sm.get('rounds')}"
                 f"</td><td class='n'>{_f(sm['final']['global'].get('accuracy'))}</td>"
                 f"<td class='n'>{_f(sm['final']['global'].get('macro_f1'))}</td>"
                 f"<td class='n'>{_f(min(accs) if accs else None)}</td></tr>")
    parts = [f"<h1>{len(runs)} runs</h1>", "<h2>Global accuracy per round</h2>",
             _img(_overlay(runs)), "<h2>Runs</h2>", f"<table id='runs'>{head}{body}</table>"]
    if sweep is not None:
        from fedsilo.sweep import sweep_table

        parts += ["<h2>Sweep</h2>", f"<pre>{html.escape(sweep_table(sweep['rows']))}</pre>"]
    parts += ["<h2>Per institution</h2>",
              *[f"<h3>{html.escape(r['name'])}</h3>{_institution_table(r['summary'])}"
                for r in runs]]
    return "\n".join(parts)


# -- plots -------------------------------------------------------------------------------------
def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curves(rows: list[dict]):
    plt = _figure()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    rounds = [r["round"] for r in rows]
    names = sorted({n for r in rows for n in r["institutions"]})
    for name in names:
        ys = [r["institutions"].get(name, {}).get("accuracy") for r in rows]
        ax.plot(rounds, [float("nan") if y is None else y for y in ys], linewidth=0.9,
                alpha=0.6, label=name if len(names) <= 10 else None)
    worst = [min((v["accuracy"] for v in r["institutions"].values()
                  if v.get("accuracy") is not None), default=float("nan")) for r in rows]
    ax.plot(rounds, worst, "k--", linewidth=1.5, label="worst institution")
    ax.plot(rounds, [r["global"]["accuracy"] for r in rows], "k", linewidth=2.5,
            label="global")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    _integer_rounds(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def _integer_rounds(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _cost(rows: list[dict]):
    plt = _figure()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    rounds = [r["round"] for r in rows]
    ax.bar(rounds, [r.get("bytes_up", 0) + r.get("bytes_down", 0) for r in rows],
           color="tab:blue", alpha=0.6, label="bytes (up + down)")
    ax.set_xlabel("round")
    ax.set_ylabel("bytes")
    ax2 = ax.twinx()
    ax2.plot(rounds, [r.get("wall_time_s", 0) for r in rows], "r.-", label="seconds")
    ax2.set_ylabel("seconds")
    fig.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


def _overlay(runs: list[dict]):
    plt = _figure()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for run in runs:
        rows = run["rows"]
        ax.plot([r["round"] for r in rows], [r["global"]["accuracy"] for r in rows],
                marker="o", markersize=2, label=run["name"])
    ax.set_xlabel("round")
    _integer_rounds(ax)
    ax.set_ylabel("global test accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def _img(fig) -> str:
    """A figure as an image inside the page (PNG, base64): no file, no network."""
    plt = _figure()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f"<img alt='plot' src='data:image/png;base64,{data}'>"


def _png(path: Path) -> str:
    """A PNG file as an image inside the page."""
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{html.escape(path.stem)}' src='data:image/png;base64,{data}'>"


def _f(value) -> str:
    return "-" if value is None else f"{value:.3f}"
