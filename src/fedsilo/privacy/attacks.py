"""What an attacker learns: membership inference against a finished run.

Threat model (a), the outsider: it holds the run's final shared model (``head.npz``, what
the federation publishes) and a record, and asks whether the record was in some
institution's training data. The loss-threshold attack (Yeom et al. 2018) calls a record
a member when the model's loss on it is low; its score is minus the loss. Members are each
institution's training records, non-members its held-out test records (the same
distribution, never trained on). Reported per institution and for the federation: the
AUC, and the true-positive rate at 1% and 0.1% false positives with the number of
non-members (below 1,000 non-members, a 0.1% rate is not measurable: fewer than one false
positive). The ROC arithmetic is written here and checked against scikit-learn's in the
tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

FPR_LEVELS = (0.01, 0.001)
THREAT_OUTSIDER = ("outsider with the final shared model: members are an institution's "
                   "training records, non-members its held-out test records")


def roc(member_scores: np.ndarray, nonmember_scores: np.ndarray
        ) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rates, true-positive rates) of calling a record a member when its
    score is at least a threshold, over every threshold (ties move together), starting at
    (0, 0) and ending at (1, 1)."""
    scores = np.concatenate([member_scores, nonmember_scores]).astype(np.float64)
    member = np.concatenate([np.ones(len(member_scores)), np.zeros(len(nonmember_scores))])
    order = np.argsort(-scores, kind="stable")
    scores, member = scores[order], member[order]
    tp, fp = np.cumsum(member), np.cumsum(1 - member)
    last = np.r_[np.flatnonzero(np.diff(scores) != 0), len(scores) - 1]  # end of each tie
    tpr = np.r_[0.0, tp[last] / max(len(member_scores), 1)]
    fpr = np.r_[0.0, fp[last] / max(len(nonmember_scores), 1)]
    return fpr, tpr


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids)."""
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def tpr_at(fpr: np.ndarray, tpr: np.ndarray, level: float) -> float:
    """The highest true-positive rate at a false-positive rate of at most ``level``."""
    ok = fpr <= level + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def summarise(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> dict:
    fpr, tpr = roc(member_scores, nonmember_scores)
    out = {"members": int(len(member_scores)), "non_members": int(len(nonmember_scores)),
           "auc": auc(fpr, tpr)}
    for level in FPR_LEVELS:
        out[f"tpr_at_{level:g}_fpr"] = tpr_at(fpr, tpr, level)
    out["roc"] = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    return out


@torch.no_grad()
def per_record_loss(model, source, labels: np.ndarray, device, batch_size: int = 256
                    ) -> np.ndarray:
    model.to(device).eval()
    y = torch.as_tensor(labels, dtype=torch.long)
    out = []
    for start in range(0, len(source), batch_size):
        idx = np.arange(start, min(start + batch_size, len(source)))
        logits = model.logits(source.rows(idx)).float().cpu()
        out.append(nn.functional.cross_entropy(logits, y[idx], reduction="none").numpy())
    return np.concatenate(out) if out else np.zeros(0)


ATTACKS = ("loss", "lira", "labels", "canary")


def possible(run_dir: Path) -> tuple[list[str], dict[str, str]]:
    """(the attacks a run allows, why each other one is not run): the membership and
    canary attacks need an output layer in the shared model, labels a server view,
    canary canaries."""
    from fedsilo import config

    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        return list(ATTACKS), {}  # run_attacks says what is wrong
    s = config.load(run_dir / "config.toml")
    why = {}
    if s.personalize.method == "split":
        for a in ("loss", "lira", "canary"):
            why[a] = "the shared model of a 'split' run has no output layer"
    if not s.attack.server_view:
        why["labels"] = "the run kept no server view (attack.server_view = true)"
    if not s.attack.canaries:
        why.setdefault("canary", "the run holds no canaries (attack.canaries > 0)")
    return [a for a in ATTACKS if a not in why], why


def _load(run_dir: Path):
    """(scenario, federation, runtime, model built fresh with the run's initial weights,
    those initial weights, the final shared weights) of a finished run."""
    from fedsilo import config
    from fedsilo.config import ConfigError
    from fedsilo.data import build_federation
    from fedsilo.silo import runtime_for

    for name in ("config.toml", "head.npz", "summary.json"):
        if not (run_dir / name).is_file():
            raise ConfigError(f"attack: '{run_dir}' is not a finished run directory (no "
                              f"{name})")
    s = config.load(run_dir / "config.toml")
    fed = build_federation(s)
    rt = runtime_for(s)
    model = rt.model(s.model, len(fed.labels), seed=s.scenario.seed)
    init = model.get_arrays()  # a fresh process: the weights every run starts from
    with np.load(run_dir / "head.npz") as z:
        final = {k: z[k] for k in z.files}
    return s, fed, rt, model, init, final


def run_attacks(run_dir: Path, which: list[str], shadows: int | None = None,
                progress=print) -> dict:
    """Run the ``which`` attacks against ``run_dir`` and add their results to its
    ``attacks.json`` (results of other attacks already there are kept)."""
    import json

    from fedsilo import results
    from fedsilo.config import ConfigError

    run_dir = Path(run_dir)
    s, fed, rt, model, init, final = _load(run_dir)
    outsider = [a for a in which if a in ("loss", "lira", "canary")]
    if outsider and s.personalize.method == "split":
        raise ConfigError("attack: the final shared model of a 'split' run has no output "
                          "layer (each institution keeps its own); the loss, LiRA and "
                          "canary attacks need one")
    path = run_dir / "attacks.json"
    report = {}
    if path.is_file():
        try:
            report = json.loads(path.read_text())
        except ValueError:
            raise ConfigError(f"attack: '{path}' is damaged (not JSON); move it away to "
                              f"start the attacks' record afresh") from None
    if "attack" in report:  # a file of the loss attack alone: its result is the loss part
        report = {"loss": {k: report.pop(k) for k in ("attack", "threat_model",
                                                     "institutions", "federation")
                           if k in report}, **report}
    if "loss" in which:
        report["loss"] = loss_attack(s, fed, rt, model, final, progress)
    if "lira" in which:

        count = shadows or s.attack.shadows
        report["lira"] = lira_attack(s, fed, rt, model, init, final, count, progress)
    if "labels" in which:
        from fedsilo.privacy.labels import label_attack, read_rows

        progress("attack: label inference from what the server received")
        report["labels"] = label_attack(s, fed, read_rows(run_dir))
    if "canary" in which:
        report["canary"] = canary_exposure(s, fed, rt, model, final, progress)
    audit = dp_audit(s, json.loads((run_dir / "summary.json").read_text()), report)
    if audit:
        report["dp_audit"] = audit
    results.write_json(path, report)
    return report


def _membership(per: dict[str, tuple[np.ndarray, np.ndarray]], name: str,
                threat: str) -> dict:
    """Per-institution and federation summaries of membership scores (members, others)."""
    return {"attack": name, "threat_model": threat,
            "institutions": {k: summarise(a, b) for k, (a, b) in per.items()},
            "federation": summarise(np.concatenate([a for a, _ in per.values()]),
                                    np.concatenate([b for _, b in per.values()]))}


def loss_attack(s, fed, rt, model, final: dict, progress=print) -> dict:
    """The loss-threshold membership attack against the final shared model."""
    from fedsilo.silo import features, labels_of
    from fedsilo.training import trained_rows

    model.set_arrays(final)
    per = {}
    for i, inst in enumerate(fed.institutions, start=1):
        progress(f"attack: loss threshold, institution {i}/{len(fed.institutions)} "
                 f"({inst.name})")
        inside = -per_record_loss(model, features(s, rt, model, inst, "train"),
                                  labels_of(inst, "train"), rt.device)
        inside = inside[trained_rows(s, inst.name, len(inside))]  # never the holdout
        outside = -per_record_loss(model, features(s, rt, model, inst, "test"),
                                   labels_of(inst, "test"), rt.device)
        per[inst.name] = (inside, outside)
    return _membership(per, "loss threshold (Yeom et al. 2018)", THREAT_OUTSIDER)


def _pools(s, fed, rt, model):
    """Each institution's training and held-out records as one source (training first)."""
    from fedsilo.baselines import pooled_source
    from fedsilo.silo import features, labels_of

    pools, n_train = [], []
    for inst in fed.institutions:
        src = pooled_source([features(s, rt, model, inst, "train"),
                             features(s, rt, model, inst, "test")])
        pools.append((src, np.concatenate([labels_of(inst, "train"),
                                           labels_of(inst, "test")])))
        n_train.append(len(inst.train_texts))
    return pools, n_train


def lira_attack(s, fed, rt, model, init: dict, final: dict, shadows: int,
                progress=print) -> dict:
    """Online and offline LiRA (fixed variance) with ``shadows`` shadow federations."""
    from fedsilo.privacy import lira

    pools, n_train = _pools(s, fed, rt, model)
    model.set_arrays(final)
    target = np.concatenate([lira.confidence(model, src, y, rt.device) for src, y in pools])
    progress(f"attack: LiRA, training {shadows} shadow federations ({s.scenario.rounds} "
             f"rounds each, FedAvg, on random halves of every institution's records)")
    conf, inside = lira.run_shadows(s, model, pools, init, shadows, rt.device, progress)
    online, offline = lira.scores(target, conf, inside)
    out = {"shadows": shadows,
           "shadow_training": "FedAvg over the same institutions with the run's local "
                              "training" + (" (DP-SGD)" if s.privacy.dp else "")
                              + f"; the run's strategy: {s.strategy.name}"}
    from fedsilo.training import trained_rows

    for name, sc in (("online", online), ("offline", offline)):
        per, at = {}, 0
        for inst, (src, _), n in zip(fed.institutions, pools, n_train, strict=True):
            part = sc[at:at + len(src)]
            # members: the rows trained on (a validation holdout is neither)
            per[inst.name] = (part[:n][trained_rows(s, inst.name, n)], part[n:])
            at += len(src)
        out[name] = _membership(per, f"LiRA {name}, fixed variance (Carlini et al. 2022)",
                                THREAT_OUTSIDER)
    return out


def canary_exposure(s, fed, rt, model, final: dict, progress=print) -> dict:
    """Exposure of each inserted canary among ``attack.canary_references`` fresh ones."""
    from fedsilo.config import ConfigError
    from fedsilo.data import canaries
    from fedsilo.data.federation import InstitutionData
    from fedsilo.silo import features

    a = s.attack
    if a.canaries == 0:
        raise ConfigError("attack: the run holds no canaries; run it with "
                          "attack.canaries = k (k canary records at one institution) for "
                          "the canary attack")
    progress(f"attack: canary exposure, {a.canaries} canaries among "
             f"{a.canary_references} references")
    texts, labels = canaries.draw(a.canaries, len(fed.labels), s.scenario.seed, "inserted")
    # canaries that fell into a validation holdout were never trained on: left out
    from fedsilo.training import trained_rows

    who = canaries.holder(fed, a.canary_institution)
    n = len(fed.get(who).train_texts)
    trained = np.isin(np.arange(n - a.canaries, n), trained_rows(s, who, n))
    texts = tuple(t for t, k in zip(texts, trained, strict=True) if k)
    labels = labels[trained]
    if not len(texts):
        raise ConfigError(f"attack: every canary at '{who}' is in its validation holdout "
                          f"(never trained on); set train.early_stopping = 'off' or more "
                          f"attack.canaries")
    refs, ref_labels = canaries.references(a.canary_references, len(fed.labels),
                                           s.scenario.seed)
    model.set_arrays(final)
    losses = {}
    for name, t, y in (("canaries", texts, labels), ("references", refs, ref_labels)):
        probe = InstitutionData(name=f"canary-{name}", kind="bank", train_texts=t,
                                train_labels=y, test_texts=(),
                                test_labels=np.zeros(0, dtype=np.int64))
        losses[name] = per_record_loss(model, features(s, rt, model, probe, "train"), y,
                                       rt.device)
    ref = np.sort(losses["references"])
    # the canary's rank among itself and the R references (1: the lowest loss)
    ranks = 1 + np.searchsorted(ref, losses["canaries"], side="left")
    candidates = len(ref) + 1
    exposure = np.log2(candidates) - np.log2(ranks)
    return {"attack": "canary exposure (Carlini et al. 2019)",
            "threat_model": THREAT_OUTSIDER, "institution": who,
            "canaries": int(len(texts)), "held_out": int(a.canaries - len(texts)),
            "references": int(a.canary_references),
            "ranks": ranks.tolist(), "exposure": exposure.tolist(),
            "mean_exposure": float(exposure.mean()),
            "max_exposure": float(np.log2(candidates)),
            "chance_exposure": chance_exposure(candidates)}


def chance_exposure(candidates: int) -> float:
    """The mean exposure of a canary the model did not memorise (its rank uniform among
    the candidates): about log2(e) = 1.44 bits."""
    ranks = np.arange(1, candidates + 1)
    return float(np.log2(candidates) - np.mean(np.log2(ranks)))


def dp_audit(s, summary: dict, report: dict) -> dict | None:
    """For a DP run: each membership attack's federation ROC against the bound the run's
    epsilon implies, and the epsilon the attack proves."""
    from fedsilo.privacy import audit

    priv = summary.get("privacy") or {}
    insts, server = priv.get("institutions") or {}, priv.get("server")
    if insts:
        eps = max(v["epsilon"] for v in insts.values())
        delta = max(v["delta"] for v in insts.values())
        guarantee = "record level (DP-SGD), the largest institution's epsilon"
    elif server:
        eps, delta = server["epsilon"], server["delta"]
        guarantee = ("institution level (central DP): it bounds each record too, since a "
                     "record changes only its institution's update")
    else:
        return None
    if not _federation_rocs(report):
        return None
    out = {"epsilon": eps, "delta": delta, "guarantee": guarantee, "attacks": {}}
    for name, fedr in _federation_rocs(report).items():
        got = audit.epsilon_lower_bound(fedr["roc"]["fpr"], fedr["roc"]["tpr"],
                                        fedr["members"], fedr["non_members"], delta)
        got["respects_bound"] = audit.respects(eps, delta, got)
        out["attacks"][name] = got
    return out


def _federation_rocs(report: dict) -> dict[str, dict]:
    out = {}
    if "loss" in report:
        out["loss"] = report["loss"]["federation"]
    for kind in ("online", "offline"):
        if "lira" in report:
            out[f"LiRA {kind}"] = report["lira"][kind]["federation"]
    return out


def membership_table(rep: dict) -> str:
    from fedsilo.results import format_table

    rows = [[name, v["members"], v["non_members"], v["auc"], v["tpr_at_0.01_fpr"],
             v["tpr_at_0.001_fpr"]]
            for name, v in [*rep["institutions"].items(),
                            ("ALL (federation)", rep["federation"])]]
    return (f"{rep['attack']}; threat model: {rep['threat_model']}\n"
            + format_table(rows, ["institution", "members", "non-members", "AUC",
                                  "TPR @ 1% FPR", "TPR @ 0.1% FPR"]))


def attack_table(report: dict) -> str:
    """Every attack in ``report`` as text."""
    from fedsilo.privacy.labels import label_table

    parts = []
    if "loss" in report:
        parts.append(membership_table(report["loss"]))
    if "lira" in report:
        parts.append(f"LiRA with {report['lira']['shadows']} shadow federations "
                     f"({report['lira']['shadow_training']})")
        parts += [membership_table(report["lira"][k]) for k in ("online", "offline")]
    if any(k in report for k in ("loss", "lira")):
        parts.append("TPR at 0.1% FPR needs at least 1,000 non-members to mean anything; "
                     "chance is AUC 0.5 and TPR equal to the FPR")
    if "labels" in report:
        parts.append(label_table(report["labels"]))
    if "canary" in report:
        c = report["canary"]
        parts.append(f"{c['attack']}: {c['canaries']} canaries at {c['institution']}, "
                     f"ranked among {c['references']} references: mean exposure "
                     f"{c['mean_exposure']:.2f} bits (at most {c['max_exposure']:.2f}; "
                     f"{c['chance_exposure']:.2f} for a canary not memorised); ranks "
                     f"{c['ranks']}"
                     + (f"; {c['held_out']} in the validation holdout, left out"
                        if c.get("held_out") else ""))
    if "dp_audit" in report:
        parts.append(audit_table(report["dp_audit"]))
    return "\n\n".join(parts)


def measured_table(report: dict) -> str:
    """The attacks' headline numbers in one table, for ``fedsilo privacy``."""
    from fedsilo.results import format_table

    audit = (report.get("dp_audit") or {}).get("attacks", {})
    rows = []
    for name, v in _federation_rocs(report).items():
        bound = audit.get(name, {}).get("epsilon_lower_bound")
        rows.append([name, v["auc"], v["tpr_at_0.01_fpr"], v["tpr_at_0.001_fpr"],
                     "-" if bound is None else bound])
    parts = []
    if rows:
        parts.append(format_table(rows, ["membership attack", "AUC", "TPR @ 1% FPR",
                                         "TPR @ 0.1% FPR", "epsilon proven (95%)"]))
    lab = report.get("labels") or {}
    if "federation" in lab:
        f = lab["federation"]
        parts.append(f"label inference by the server: L1 error {f['first_round_l1']:.3f} "
                     f"in the first round, {f['mean_l1']:.3f} on average (0 exact, 2 "
                     f"disjoint)")
    elif "not_possible" in lab:
        parts.append(f"label inference by the server: not possible ({lab['not_possible']})")
    elif "aggregate_only" in lab:
        parts.append("label inference by the server: no institution's update held (SecAgg+); "
                     f"the summed counts to L1 error {lab['aggregate_only']['mean_l1']:.3f}")
    if "canary" in report:
        c = report["canary"]
        parts.append(f"canary exposure: {c['mean_exposure']:.2f} bits on average (at most "
                     f"{c['max_exposure']:.2f}, {c['chance_exposure']:.2f} by chance)")
    return "\n".join(parts)


def audit_table(a: dict) -> str:
    from fedsilo.results import format_table

    rows = [[name, v["epsilon_point_estimate"], v["epsilon_lower_bound"],
             "yes" if v["respects_bound"] else "NO"] for name, v in a["attacks"].items()]
    return (f"against the run's guarantee: epsilon {a['epsilon']:.3g}, delta "
            f"{a['delta']:.1e} ({a['guarantee']})\n"
            + format_table(rows, ["attack", "empirical epsilon", "lower bound (95%)",
                                  "within the bound"]))


def plot_roc(report: dict, path: Path) -> Path:
    """The membership attacks' ROCs on log-log axes: the federation's for each attack and,
    for the loss attack, each institution's."""
    curves = [(f"{k} (federation)", v) for k, v in _federation_rocs(report).items()]
    if "loss" in report:
        curves += [(f"loss: {k}", v) for k, v in report["loss"]["institutions"].items()]
    return _plot_rocs(curves, path, "membership inference")


def plot_dp_bound(report: dict, path: Path) -> Path | None:
    """The attacks' federation ROCs beside the bound the run's (epsilon, delta) implies."""
    a = report.get("dp_audit")
    if not a:
        return None
    curves = [(f"{k} (federation)", v) for k, v in _federation_rocs(report).items()]
    return _plot_rocs(curves, path, "attacks against the DP guarantee",
                      bound=(a["epsilon"], a["delta"]))


def _plot_rocs(curves: list[tuple[str, dict]], path: Path, title: str,
               bound: tuple[float, float] | None = None) -> Path:
    """ROCs on log-log axes with the chance line and, with ``bound`` (epsilon, delta),
    the highest TPR that (epsilon, delta)-DP allows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fedsilo.privacy.audit import bound_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    grid = np.logspace(-4, 0, 200)
    if bound is not None:
        eps, delta = bound
        ax.plot(grid, bound_curve(eps, delta, grid), "r-", lw=1.5,
                label=f"({eps:.2f}, {delta:.0e})-DP bound")
    for name, v in curves:
        fpr, tpr = np.asarray(v["roc"]["fpr"]), np.asarray(v["roc"]["tpr"])
        keep = (fpr > 0) & (tpr > 0)
        whole = "federation" in name
        ax.plot(fpr[keep], tpr[keep], lw=2 if whole else 0.8, alpha=1 if whole else 0.6,
                label=f"{name} (AUC {v['auc']:.2f})")
    ax.plot(grid, grid, "k--", lw=0.8, label="chance")
    ax.set(xscale="log", yscale="log", xlabel="false-positive rate",
           ylabel="true-positive rate", xlim=(1e-4, 1), ylim=(1e-4, 1), title=title)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
