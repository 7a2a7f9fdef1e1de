"""The honest-but-curious server's view (``attack.server_view``), kept for the
label-inference attack (fedsilo.attacks.labels).

``ServerView`` notes, each round, what the server held of the output layer as the replies
arrived (before any clipping of the server's own): every reply's change to its bias, with
the logits the sent layer gives at the mean input that the reply's weight change reveals.
Replies that carry masked vectors (SecAgg+) give nothing; then only the aggregate's change
is noted. A 'split' run's output layer never leaves a node: the view says so.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid

from fedsilo import protocol
from strategies.ledger import RoundLedger, reply_metrics
from strategies.wrapper import Around


def mean_input_logits(sent_weight: np.ndarray, sent_bias: np.ndarray,
                      weight_update: np.ndarray, bias_update: np.ndarray) -> np.ndarray:
    """The sent output layer's logits at the mean input estimated from an update:
    ``mu = argmin sum_c ||dW_c - db_c mu||^2`` (each row of the weight update is about the
    bias update times the mean input when the inputs share a large common part)."""
    db = np.asarray(bias_update, dtype=np.float64)
    dw = np.asarray(weight_update, dtype=np.float64)
    denom = float(db @ db)
    mu = db @ dw / denom if denom > 0 else np.zeros(dw.shape[1])
    return np.asarray(sent_weight, dtype=np.float64) @ mu + np.asarray(sent_bias,
                                                                       dtype=np.float64)


class ServerView(Around):
    """``inner`` with the server's view of each round in ``ledger.server_view``."""

    def __init__(self, inner, ledger: RoundLedger):
        super().__init__(inner)
        self.ledger = ledger
        self._sent_bias: np.ndarray | None = None
        self._sent_weight: np.ndarray | None = None

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._sent_bias = self._sent_weight = None
        if protocol.OUTPUT_BIAS in arrays:
            self._sent_bias = arrays[protocol.OUTPUT_BIAS].numpy().astype(np.float64)
            self._sent_weight = arrays[protocol.OUTPUT_WEIGHT].numpy().astype(np.float64)
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        answered = [m for m in replies if not m.has_error()]
        view = self._of_replies(answered)  # as received
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        if not view["replies"] and view.get("output_layer_shared", True) and \
                arrays is not None:  # masked vectors (SecAgg+): only the aggregate
            view["aggregate"] = {
                **self._seen(arrays), "institutions": len(answered),
                "examples": sum(int(reply_metrics(m)[protocol.NUM_EXAMPLES])
                                for m in answered)}
        self.ledger.server_view[server_round] = view
        return arrays, metrics

    def _of_replies(self, answered: list[Message]) -> dict:
        if self._sent_bias is None:  # 'split': the output layer never leaves a node
            return {"replies": {}, "output_layer_shared": False}
        view: dict = {"replies": {}}
        for m in answered:
            rec = m.content.array_records.get(protocol.ARRAYS)
            examples = int(reply_metrics(m)[protocol.NUM_EXAMPLES])
            if rec is None or protocol.OUTPUT_BIAS not in rec or examples == 0:
                continue  # masked, or an institution that did not train (its budget spent)
            view["replies"][self.ledger.name_of(m.metadata.src_node_id)] = {
                **self._seen(rec), "examples": examples}
        return view

    def _seen(self, rec: ArrayRecord) -> dict:
        db = rec[protocol.OUTPUT_BIAS].numpy().astype(np.float64) - self._sent_bias
        dw = rec[protocol.OUTPUT_WEIGHT].numpy().astype(np.float64) - self._sent_weight
        return {"update": db.tolist(),
                "logits": mean_input_logits(self._sent_weight, self._sent_bias, dw,
                                            db).tolist()}
