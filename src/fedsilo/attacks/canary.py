"""Canary exposure (Carlini et al. 2019, "The Secret Sharer"): how far below fresh
reference canaries each inserted canary's loss ranks under the final shared model."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fedsilo.attacks.membership import THREAT_OUTSIDER, per_record_loss

if TYPE_CHECKING:
    from fedsilo.attacks.target import Target


def canary_exposure(t: Target, progress=print) -> dict:
    """Exposure of each inserted canary among ``attack.canary_references`` fresh ones."""
    from fedsilo.config import ConfigError
    from fedsilo.data import canaries
    from fedsilo.data.federation import InstitutionData
    from fedsilo.node.silo import features

    s, fed, rt, model = t.scenario, t.federation, t.runtime, t.model
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
    model.set_arrays(t.final)
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
