"""Stand-ins and references shared by the tests: a fake grid, reply builders, a linear head
for the training loops, and an accountant independent of fedsilo's."""

from __future__ import annotations

import logging

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, MessageType, MetricRecord, RecordDict


def roster(nodes: list[int], kind: str = "bank", prefix: str = "inst") -> dict[int, dict]:
    """node id -> the handshake's description of institution ``<prefix>-<i>``."""
    return {n: {"institution": f"{prefix}-{i}", "kind": kind}
            for i, n in enumerate(nodes)}


class FakeGrid:
    """Just enough of a Grid for Flower's sampling: the connected node ids."""

    def __init__(self, nodes):
        self.nodes = list(nodes)

    def get_node_ids(self):
        return list(self.nodes)


def records(arrays: dict[str, np.ndarray], dtype=None) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v, dtype=dtype)) for k, v in arrays.items()})


def reply(node: int, arrays: dict[str, np.ndarray] | None, metrics: dict,
          extra: dict[str, dict[str, np.ndarray]] | None = None, dtype=None) -> Message:
    """A training reply from ``node``: its arrays (if any), metrics and extra array records."""
    sent = Message(RecordDict(), message_type=MessageType.TRAIN, dst_node_id=node)
    content = RecordDict({"metrics": MetricRecord(metrics)})
    if arrays is not None:
        content["arrays"] = records(arrays, dtype)
    for name, extra_arrays in (extra or {}).items():
        content[name] = records(extra_arrays, dtype)
    return Message(content, reply_to=sent)


class LinearHead(torch.nn.Module):
    """A bias-free linear head with the interface the training loops expect of a model
    (trainable, train_mode, logits on a batch of pooled features)."""

    def __init__(self, d_in: int, num_labels: int):
        super().__init__()
        self.head = torch.nn.Linear(d_in, num_labels, bias=False)

    def trainable(self):
        return dict(self.named_parameters())

    def train_mode(self):
        self.train()

    def logits(self, batch):
        return self.head(batch.pooled)

    def forward(self, batch):
        return self.logits(batch)


def _rdp_accountant():
    import dp_accounting  # noqa: F401 - Google's accountant, a separate implementation
    from dp_accounting import rdp

    from fedsilo.privacy.dpsgd import ORDERS

    logging.getLogger("absl").setLevel(logging.ERROR)
    return rdp.RdpAccountant(orders=ORDERS)


def dp_sgd_epsilon(sigma: float, q: float, steps: int, delta: float) -> float:
    """Google's dp_accounting: ``steps`` Poisson-sampled Gaussian steps, same orders."""
    import dp_accounting

    acc = _rdp_accountant()
    acc.compose(dp_accounting.PoissonSampledDpEvent(
        q, dp_accounting.GaussianDpEvent(sigma)), steps)
    return acc.get_epsilon(delta)


def gaussian_epsilon(z: float, rounds: int, delta: float) -> float:
    """Google's dp_accounting: ``rounds`` Gaussian releases of multiplier z, no sampling."""
    import dp_accounting

    acc = _rdp_accountant()
    acc.compose(dp_accounting.GaussianDpEvent(z), rounds)
    return acc.get_epsilon(delta)


def leftovers_of(*owners: int) -> list[str]:
    """Processes still running that a `fedsilo` command with one of these pids started
    (every process of a run carries its owner's pid in FEDSILO_RUN_OWNER): none may outlive
    it. Precise when other tests run at the same time."""
    import psutil

    wanted = {str(pid) for pid in owners}
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            if p.environ().get("FEDSILO_RUN_OWNER") in wanted and p.status() != "zombie":
                found.append(" ".join([p.info["name"] or "", *(p.info["cmdline"] or [])])[:120])
        except psutil.Error:
            pass
    return found
