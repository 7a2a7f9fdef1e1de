"""Label inference by the server (threat model (b), the honest-but-curious server).

For softmax cross-entropy, the gradient of the output layer's bias is ``p - y`` per
record, and of its weights ``(p - y) h`` with ``h`` the layer's input. A round of SGD steps
of mean batch gradients moves the bias by about ``-(sum of the step sizes) * S / n`` with
``S = sum_i (p_i - y_i)``, so the server, which knows the bias it sent, the step sizes (the
run's configuration) and ``n`` (the reply's example count), has ``S``; the institution's
label counts are ``sum_i p_i - S``. For ``sum_i p_i`` it needs the model's mean prediction
on data it never sees: the weight update gives it away too, since when the inputs share a
large common part ``mu`` (as sentence embeddings do) each row of the weight update is about
the bias update times ``mu``. The server estimates ``mu`` by least squares over the rows and
takes the prediction of the model it sent at ``mu`` (strategies/view.py, as the replies
arrive; iDLG, Zhao et al. 2020, and its
count-recovering successors). For one step the recovery is almost exact; over several
steps the model moves while it trains and the estimate coarsens. Adam and AdamW normalise
each coordinate's step, so the size of the bias update says little under them: the
report flags it.

The attack runs on what the server really held (the run's ``server_view``, kept with
``attack.server_view = true``): under SecAgg+ that is only the aggregate, so no single
institution's labels can be attacked, and the report says so.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

THREAT_SERVER = ("honest-but-curious server: it sees every reply it receives each round "
                 "(under SecAgg+ only their aggregate) and knows the run's configuration")


def recover_counts(update: np.ndarray, examples: int, step_size_sum: float,
                   logits: np.ndarray | None = None) -> np.ndarray:
    """Label counts from an output-bias update: ``n * p + n * update / sum(lr)`` with ``p``
    the prediction at the estimated mean input (``logits``; uniform without), negative
    counts cut to 0, rescaled to ``n``."""
    c = len(update)
    if logits is None:
        p = np.full(c, 1.0 / c)
    else:
        z = np.asarray(logits, dtype=np.float64)
        p = np.exp(z - z.max())
        p /= p.sum()
    est = examples * p + examples * np.asarray(update, dtype=np.float64) / step_size_sum
    est = np.clip(est, 0.0, None)
    total = est.sum()
    return est * (examples / total) if total > 0 else np.full(c, examples / c)


def histogram_error(recovered: np.ndarray, true: np.ndarray) -> dict:
    """L1 distance between the two label distributions (0: exact, 2: disjoint) and
    whether the most frequent label was found."""
    r, t = recovered / max(recovered.sum(), 1e-12), true / max(true.sum(), 1e-12)
    return {"l1": float(np.abs(r - t).sum()), "top1": bool(t[np.argmax(r)] == t.max())}


def step_size_sum(s, examples: int) -> float:
    """The sum of the output layer's step sizes over one institution's round, as the
    server computes it from the configuration and the reply's example count."""
    from fedsilo.privacy import dpsgd
    from fedsilo.training import lr_sum

    if s.privacy.dp:
        steps = dpsgd.plan(s.privacy, s.train, examples, s.scenario.rounds).steps_per_round
    else:
        steps = s.train.local_epochs * math.ceil(examples / s.train.batch_size)
    return lr_sum(s.train, s.model.scope, "head.out.bias", steps)


def true_counts(s, fed) -> dict[str, np.ndarray]:
    """Each institution's training label counts over the rows it trains on."""
    from fedsilo.training import trained_rows

    out = {}
    for inst in fed.institutions:
        y = inst.train_labels[trained_rows(s, inst.name, len(inst.train_labels))]
        out[inst.name] = np.bincount(y, minlength=len(fed.labels)).astype(np.float64)
    return out


def label_attack(s, fed, rows: list[dict]) -> dict:
    """The attack against every round's server view in ``rows`` (metrics rows)."""
    from fedsilo.config import ConfigError

    views = [(r["round"], r["server_view"]) for r in rows if "server_view" in r]
    if not views:
        raise ConfigError("attack: the run kept no server view; run it with "
                          "attack.server_view = true for the label-inference attack")
    report = {"attack": "label inference from the output layer's bias update (iDLG-style)",
              "threat_model": THREAT_SERVER, "optimizer": s.train.optimizer,
              "institutions": {}, "rounds": len(views)}
    if all(v.get("output_layer_shared") is False for _, v in views):
        report["not_possible"] = ("the output layer is private to each institution "
                                  "(personalize.method = 'split'): the server never "
                                  "receives it, so this attack has nothing to read")
        return report
    truth = true_counts(s, fed)
    per: dict[str, list[dict]] = {}
    aggregate: list[dict] = []
    for rnd, view in views:
        for name, rep in view.get("replies", {}).items():
            if rep["examples"] == 0:  # it did not train this round
                continue
            got = recover_counts(np.asarray(rep["update"]), rep["examples"],
                                 step_size_sum(s, rep["examples"]), rep.get("logits"))
            per.setdefault(name, []).append(
                {"round": rnd, **histogram_error(got, truth[name]),
                 "recovered": np.round(got, 2).tolist()})
        if "aggregate" in view:
            agg = view["aggregate"]
            # the mean update of the institutions that took part; their summed counts
            n = agg["examples"]
            got = recover_counts(np.asarray(agg["update"]), n, step_size_sum(
                s, max(1, n // max(agg["institutions"], 1))), agg.get("logits"))
            aggregate.append({"round": rnd, **histogram_error(
                got, sum(truth.values())), "institutions": agg["institutions"]})
    institutions = {name: _summary(v, truth[name]) for name, v in per.items()}
    report["institutions"] = institutions
    caveats = []
    if s.train.optimizer != "sgd":
        caveats.append(f"the run used {s.train.optimizer}: its per-coordinate step "
                       f"normalisation hides the size of the bias gradient, so these "
                       f"counts are rough")
    if s.train.stops_early(s.model.scope):
        caveats.append("early stopping may end a round before its last epoch; the step "
                       "sizes are counted as if every epoch ran")
    if s.strategy.name in ("scaffold", "fedprox") or s.train.weight_decay > 0:
        caveats.append("SCAFFOLD's correction, FedProx's term and weight decay also move "
                       "the bias; the estimate leaves them out")
    if caveats:
        report["caveat"] = "; ".join(caveats)
    if aggregate:
        report["aggregate_only"] = {
            "note": "the server held only the aggregate of the replies (SecAgg+): no "
                    "institution's own labels can be attacked; the federation's summed "
                    "counts are recovered instead (exact for institutions of equal size; "
                    "the weighted mean tilts them towards the larger ones)",
            "rounds": aggregate,
            "mean_l1": float(np.mean([a["l1"] for a in aggregate]))}
    if institutions:
        report["federation"] = {
            "mean_l1": float(np.mean([v["mean_l1"] for v in institutions.values()])),
            "first_round_l1": float(np.mean([v["first_l1"] for v in
                                              institutions.values()])),
            "top1": float(np.mean([v["top1_share"] for v in institutions.values()]))}
    return report


def _summary(rounds: list[dict], true: np.ndarray) -> dict:
    return {"rounds": rounds, "true": true.tolist(), "first_l1": rounds[0]["l1"],
            "mean_l1": float(np.mean([r["l1"] for r in rounds])),
            "top1_share": float(np.mean([r["top1"] for r in rounds]))}


def label_table(report: dict) -> str:
    from fedsilo.results.summary import format_table

    lines = [f"{report['attack']}; threat model: {report['threat_model']}"]
    if report["institutions"]:
        rows = [[name, v["first_l1"], v["mean_l1"], v["top1_share"]]
                for name, v in report["institutions"].items()]
        lines.append(format_table(rows, ["institution", "L1 error, first round",
                                         "L1 error mean", "top-1 label found"]))
        lines.append("L1 error between the recovered and the true label distribution of "
                     "the institution's training data: 0 is exact, 2 is disjoint")
    if "not_possible" in report:
        lines.append(f"not possible: {report['not_possible']}")
    if "aggregate_only" in report:
        a = report["aggregate_only"]
        lines.append(f"{a['note']} (L1 error of the summed counts: {a['mean_l1']:.3f})")
    if "caveat" in report:
        lines.append(f"note: {report['caveat']}")
    return "\n".join(lines)


def read_rows(run_dir: Path) -> list[dict]:
    """The run's metrics rows, or one line on what is wrong with them."""
    from fedsilo.config import ConfigError
    from fedsilo.results.rows import read_rows

    try:
        return read_rows(run_dir)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"attack: cannot read the rounds of '{run_dir}' from "
                          f"metrics.jsonl ({exc})") from None
