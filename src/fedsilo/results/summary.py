"""A run's summary from its metrics rows, and the text tables the console prints:
per institution at the end of a run, and the privacy report."""

from __future__ import annotations

from typing import Any


def summarise(rows: list[dict], **extra: Any) -> dict:
    """The summary fields every run has, from its metrics rows: final, best and first
    round; ``extra`` adds what a kind of run knows besides."""
    last = rows[-1]
    best = max(rows, key=lambda r: r["global"]["accuracy"])
    final = {"round": last["round"], "global": last["global"],
             "institutions": last["institutions"]}
    if "personal" in last:
        final["personal"] = last["personal"]
    return {"status": "completed", "rounds": len(rows), "final": final,
            "best": {"round": best["round"], "global": best["global"]},
            "first_round": {"global": rows[0]["global"]}, **extra}


def format_table(rows: list[list[Any]], header: list[str]) -> str:
    """A plain aligned text table."""
    cells = [[_fmt(c) for c in r] for r in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for j, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def final_table(summary: dict) -> str:
    """Accuracy and macro-F1 per institution and for the federation (final round); with a
    personalisation method, each institution's own model beside the shared one."""
    final = summary["final"]
    own = "personal" in final
    rows = []
    for name, r in final["institutions"].items():
        row = [name, r["kind"], r["test_examples"], r["accuracy"], r["macro_f1"]]
        if own:
            p = r.get("personal") or {}
            row += [p.get("accuracy", "-"), p.get("macro_f1", "-")]
        rows.append(row)
    g = final["global"]
    label = "ALL (union of test splits)" if "note" not in g else "ALL (mean, federation test)"
    rows.append([label, "-", g.get("test_examples", "-"), g["accuracy"], g["macro_f1"]]
                + ([final["personal"]["accuracy"], final["personal"]["macro_f1"]]
                   if own else []))
    header = ["institution", "kind", "test", "accuracy", "macro-F1"]
    if own:
        header = ["institution", "kind", "test", "shared acc", "shared F1", "personal acc",
                  "personal F1"]
    return format_table(rows, header)


def privacy_table(summary: dict) -> str | None:
    """The privacy report: per institution (DP-SGD), the server's mechanism (institution-
    level DP) and secure aggregation; None when the run used none of them."""
    priv = summary.get("privacy") or {}
    insts, server, sa = priv.get("institutions") or {}, priv.get("server"), \
        priv.get("secure_aggregation")
    parts = []
    if insts:
        rows = [[n, v["epsilon"], f"{v['delta']:.2e}", v["noise_multiplier"],
                 v["max_grad_norm"], v["sampling_rate"], v["steps"],
                 "yes" if v["stopped_by_budget"] else "no"] for n, v in insts.items()]
        first = next(iter(insts.values()))
        parts.append("record level, per institution:\n"
                     + format_table(rows, ["institution", "epsilon", "delta", "noise",
                                           "clip C", "sampling q", "steps", "budget spent"])
                     + f"\nmechanism: {first['mechanism']}\naccountant: {first['accountant']}")
    if server:
        row = [["server", server["epsilon"], f"{server['delta']:.2e}",
                server["noise_multiplier"], server["clipping_norm"],
                f"{server['sampled']}/{server['population']}", server["rounds"]]]
        parts.append("institution level, at the server:\n"
                     + format_table(row, ["mechanism", "epsilon", "delta", "noise",
                                          "clip C", "sampled", "rounds"])
                     + f"\nmechanism: {server['mechanism']}\naccountant: "
                     f"{server['accountant']}\nassumptions: {server['assumptions']}")
    if sa:
        parts.append(f"secure aggregation: {sa['protocol']}; {sa['shares']} shares, "
                     f"threshold {sa['threshold']}, updates clipped to +-{sa['clip_range']} "
                     f"and quantised to {sa['quantization_bits']} bits; "
                     f"{sa['rounds_with_dropouts']} rounds with dropouts")
    return "\n\n".join(parts) if parts else None
