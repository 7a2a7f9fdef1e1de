"""The metrics row: what ``metrics.jsonl`` holds for each round, and the one place where
the wire's metric names (``fedsilo.protocol``: ``macro-f1``, ``num-examples``, ...) become
the row's (``macro_f1``, ``test_examples``, ...).

Three kinds of row share the file format: a federated round (``RoundRow``, written by the
ServerApp's recorder and rebuilt by ``fedsilo submit``) and the two baselines'
(``BaselineRow``). A new metric is declared in ``protocol.py``, named here, and shown
where it is shown.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NotRequired, TypedDict

# -- wire name -> row name ------------------------------------------------------------------
EVALUATION_FIELDS = {"accuracy": "accuracy", "macro-f1": "macro_f1", "loss": "loss",
                     "num-examples": "test_examples"}
TRAINING_FIELDS = {"train-loss": "train_loss", "num-examples": "train_examples",
                   "train-time-s": "train_time_s"}
PERSONAL_FIELDS = {"personal-accuracy": "accuracy", "personal-macro-f1": "macro_f1",
                   "personal-loss": "loss"}
PRIVACY_FIELDS = {"dp-epsilon": "epsilon", "dp-delta": "delta",
                  "dp-noise-multiplier": "noise_multiplier",
                  "dp-max-grad-norm": "max_grad_norm", "dp-sampling-rate": "sampling_rate",
                  "dp-steps": "steps", "dp-stopped": "stopped_by_budget"}
EARLY_STOPPING_FIELDS = {"best-epoch": "best_epoch", "validation-loss": "validation_loss"}


def from_wire(metrics: dict, fields: dict[str, str]) -> dict[str, Any]:
    """The row's part named by ``fields`` from a reply's wire metrics (None where absent)."""
    return {row: metrics.get(wire) for wire, row in fields.items()}


# -- the rows -------------------------------------------------------------------------------
class Scores(TypedDict):
    accuracy: float | None
    macro_f1: float | None


class Personal(Scores):
    loss: NotRequired[float | None]
    institutions: NotRequired[int]  # in the federation's part: how many reported one


class RecordPrivacy(TypedDict):
    """An institution's DP-SGD accounting as its training reply reported it."""

    mechanism: str
    accountant: str
    epsilon: float
    delta: float
    noise_multiplier: float
    max_grad_norm: float
    sampling_rate: float
    steps: int
    stopped_by_budget: bool


class EarlyStopping(TypedDict):
    best_epoch: int
    validation_loss: float


class InstitutionRow(TypedDict):
    """One institution in a federated round (None: it did not train or was not evaluated)."""

    kind: str
    accuracy: float | None
    macro_f1: float | None
    loss: float | None
    test_examples: int | None
    train_loss: float | None
    train_examples: int | None
    train_time_s: float | None
    ray_node: str | None
    malicious: str | None
    privacy: NotRequired[RecordPrivacy]
    personal: NotRequired[Personal]
    early_stopping: NotRequired[EarlyStopping]


class GlobalRow(TypedDict):
    """The federation: scores over the union of the institutions' test splits."""

    accuracy: float
    macro_f1: float
    loss: float
    test_examples: int
    train_loss: float | None


# (the functional form: ``global`` is a Python keyword)
RoundRow = TypedDict("RoundRow", {
    "round": int,
    "global": GlobalRow,
    "institutions": dict[str, InstitutionRow],
    "bytes_up": int,
    "bytes_down": int,
    "wall_time_s": float,
    "elapsed_s": float,
    "timing": dict[str, float],
    "personal": NotRequired[Personal],  # every institution's own model, confusions summed
    "secagg": NotRequired[dict],  # the protocol's cost, survivors and dropouts
    "central_dp": NotRequired[dict],  # clipping norm, noise and epsilon of the round
    "selected": NotRequired[list[str]],  # whose updates Krum/MultiKrum kept
    "dropped": NotRequired[dict[str, str]],  # institution -> why it was left out
    "server_view": NotRequired[dict],  # what the server held (attack.server_view)
})


class LocalOnlyInstitution(TypedDict):
    kind: str
    accuracy: float
    macro_f1: float
    test_examples: int
    federation_accuracy: float  # its model on every institution's test split
    federation_macro_f1: float
    train_loss: float


class CentralizedInstitution(TypedDict):
    kind: str
    accuracy: float
    macro_f1: float
    loss: float
    test_examples: int


class BaselineGlobal(TypedDict):
    accuracy: float
    macro_f1: float
    test_examples: NotRequired[int]
    train_loss: NotRequired[float]
    note: NotRequired[str]  # local-only: what the number is a mean of
    worst_accuracy: NotRequired[float]


BaselineRow = TypedDict("BaselineRow", {
    "round": int,
    "global": BaselineGlobal,
    "institutions": dict[str, LocalOnlyInstitution] | dict[str, CentralizedInstitution],
    "wall_time_s": float,
})


# -- building a federated round's row -------------------------------------------------------
def institution_row(kind: str, train: dict, evaluation: dict, ray_node: str | None,
                    malicious: str | None, dp_names: tuple[str, str] = ("", "")
                    ) -> InstitutionRow:
    """An institution's part of the round from the wire metrics of its training and
    evaluation replies (empty when it sent none); ``dp_names``: the DP-SGD mechanism and
    accountant its privacy spend is reported under."""
    ev, tr = from_wire(evaluation, EVALUATION_FIELDS), from_wire(train, TRAINING_FIELDS)
    row = {"kind": kind, "accuracy": ev["accuracy"], "macro_f1": ev["macro_f1"],
           "loss": ev["loss"], "test_examples": ev["test_examples"], **tr,
           "ray_node": ray_node, "malicious": malicious}
    if "dp-epsilon" in train:
        row["privacy"] = record_privacy(train, *dp_names)
    if "personal-accuracy" in evaluation:  # its own model (personalize.method)
        row["personal"] = from_wire(evaluation, PERSONAL_FIELDS)
    if "best-epoch" in train:  # early stopping on the institution's validation rows
        es = from_wire(train, EARLY_STOPPING_FIELDS)
        row["early_stopping"] = {"best_epoch": int(es["best_epoch"]),
                                 "validation_loss": es["validation_loss"]}
    return row  # type: ignore[return-value]


def record_privacy(train: dict, mechanism: str, accountant: str) -> RecordPrivacy:
    """An institution's DP-SGD accounting from its training reply's wire metrics."""
    p = from_wire(train, PRIVACY_FIELDS)
    return {"mechanism": mechanism, "accountant": accountant, **p,  # type: ignore[typeddict-item]
            "steps": int(p["steps"]), "stopped_by_budget": bool(p["stopped_by_budget"])}


def global_row(aggregate: dict, train_loss: float | None) -> GlobalRow:
    """The federation's part from the aggregated evaluation (wire names)."""
    g = from_wire(aggregate, EVALUATION_FIELDS)
    return {**g, "train_loss": train_loss}  # type: ignore[typeddict-item]


def round_row(server_round: int, glob: GlobalRow, institutions: dict[str, InstitutionRow],
              bytes_up: int, bytes_down: int, wall_time_s: float, elapsed_s: float,
              timing: dict[str, float], **extra: Any) -> RoundRow:
    """A federated round's row; ``extra`` holds the optional parts the round has (None:
    left out)."""
    return {"round": server_round, "global": glob, "institutions": institutions,
            "bytes_up": bytes_up, "bytes_down": bytes_down, "wall_time_s": wall_time_s,
            "elapsed_s": elapsed_s, "timing": timing,
            **{k: v for k, v in extra.items() if v is not None}}  # type: ignore[typeddict-item]


# -- reading --------------------------------------------------------------------------------
def read_rows(run_dir: Path) -> list[RoundRow]:
    """A run directory's metrics rows (``metrics.jsonl``), one per round; none if absent."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] \
        if path.is_file() else []


def worst_accuracy(row: dict) -> float | None:
    """The accuracy of the institution the shared model serves worst in ``row``."""
    accs = [v["accuracy"] for v in row["institutions"].values()
            if v.get("accuracy") is not None]
    return min(accs) if accs else None


def series(rows: list[dict], name: str, key: str = "accuracy") -> list[float]:
    """One institution's ``key`` per round (NaN where it has none)."""
    values = [r["institutions"].get(name, {}).get(key) for r in rows]
    return [float("nan") if v is None else v for v in values]
