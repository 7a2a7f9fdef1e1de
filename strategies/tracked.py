"""``Tracked``: around any strategy, the run's bookkeeping and loud failure.

It wraps a Message-API strategy (Flower's, or one of ours) the way Flower's DP wrappers do:
every call goes to the inner strategy, and on the way it notes who was asked and what came
back (fedsilo's ``RoundLedger``), times each phase, stops the run when an institution
failed, and keeps the global arrays in the dtype they were sent with. Aggregation itself
is left to the inner strategy.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedsilo import protocol
from fedsilo.arrays import from_record, to_record
from fedsilo.flower_compat import select_multikrum
from fedsilo.privacy.central import CentralAccount
from strategies.ledger import ClientFailure, RoundLedger


class Tracked(Strategy):
    """``inner`` with bookkeeping in ``ledger``.

    ``tolerates_dropouts``: secure aggregation decides itself who may drop out of training.
    ``skip_below``: ``strategy.on_failure = 'skip'``: a failed institution is left out of
    the round while at least this many replied (None: any failure stops the run).
    ``account``: the institution-level DP account, for the privacy report.
    ``keep_view``: ``attack.server_view``: note, each round, the output layer's bias the
    server sent and what it received of it (each reply's, or under SecAgg+ only the
    aggregate), in ``ledger.server_view``.
    """

    def __init__(self, inner: Strategy, ledger: RoundLedger, *,
                 tolerates_dropouts: bool = False, skip_below: int | None = None,
                 account: CentralAccount | None = None, seed: int = 0,
                 keep_view: bool = False):
        self.inner = inner
        self.keep_view = keep_view
        self._sent_bias: np.ndarray | None = None
        self._sent_weight: np.ndarray | None = None
        self.ledger = ledger
        self.seed = seed
        self.tolerates_dropouts = tolerates_dropouts
        self.skip_below = skip_below
        self.account = account
        self._sent_dtypes: dict[str, np.dtype] = {}

    def summary(self) -> None:
        self.inner.summary()

    # -- sending ---------------------------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._sent_dtypes = {k: v.numpy().dtype for k, v in arrays.items()}
        if self.keep_view:
            self._sent_bias = self._sent_weight = None
            if protocol.OUTPUT_BIAS in arrays:
                self._sent_bias = arrays[protocol.OUTPUT_BIAS].numpy().astype(np.float64)
                self._sent_weight = arrays[protocol.OUTPUT_WEIGHT].numpy().astype(np.float64)
        self._seed_sampling(server_round, "training")
        msgs = self.inner.configure_train(server_round, arrays, config, grid)
        return self._sending(server_round, "training", msgs)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid, riding: Iterable[int] = ()) -> Iterable[Message]:
        """``riding``: the nodes whose evaluation will ride on a training message (no
        arrays go down for it)."""
        self._seed_sampling(server_round, "evaluation")
        msgs = self.inner.configure_evaluate(server_round, arrays, config, grid)
        return self._sending(server_round, "evaluation", msgs, frozenset(riding))

    def _seed_sampling(self, server_round: int, stage: str) -> None:
        """Flower samples institutions with Python's global ``random``, which other
        threads of the process (Ray's) also draw from: seed it right before each sample,
        from the scenario's seed, the round and the stage, so the same institutions are
        sampled in every run, resumed or not."""
        random.seed(f"{self.seed}:{server_round}:{stage}")

    def _sending(self, server_round: int, stage: str, msgs: Iterable[Message],
                 riding: frozenset[int] = frozenset()) -> list[Message]:
        msgs = list(msgs)
        self.ledger.sending(server_round, stage, msgs, riding)
        self.ledger.phase_start[(server_round, stage)] = time.perf_counter()
        return msgs

    # -- receiving -------------------------------------------------------------------------
    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = self._received(server_round, "training", replies)
        answered = [m for m in replies if not m.has_error()]
        if answered and all(int(_metrics(m)[protocol.NUM_EXAMPLES]) == 0 for m in answered):
            raise ClientFailure(f"no institution trained in round {server_round}: every "
                                f"sampled institution has spent its privacy budget "
                                f"(privacy.max_epsilon)")
        if hasattr(self.inner, "num_nodes_to_select"):  # Krum and MultiKrum
            self._record_selection(server_round, answered)
        view = self._view_of_replies(answered) if self.keep_view else None  # as received
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        if arrays is not None:
            arrays = _as_dtypes(arrays, self._sent_dtypes)
        if view is not None:
            if not view["replies"] and view.get("output_layer_shared", True) and \
                    arrays is not None:  # masked vectors (SecAgg+): only the aggregate
                view["aggregate"] = {
                    **self._seen(arrays), "institutions": len(answered),
                    "examples": sum(int(_metrics(m)[protocol.NUM_EXAMPLES])
                                    for m in answered)}
            self.ledger.server_view[server_round] = view
        self._aggregated(server_round, "training")
        return arrays, metrics

    def _view_of_replies(self, answered: list[Message]) -> dict:
        """What an honest-but-curious server holds of the output layer, as the replies
        arrive (before any clipping of the server's own): every reply's change to its bias,
        with the logits the sent layer gives at the mean input the reply's weight change
        reveals (fedsilo.privacy.labels). Replies that carry masked vectors (SecAgg+) give
        nothing; the aggregate is added after aggregation."""
        if self._sent_bias is None:  # 'split': the output layer never leaves a node
            return {"replies": {}, "output_layer_shared": False}
        view: dict = {"replies": {}}
        for m in answered:
            rec = m.content.array_records.get(protocol.ARRAYS)
            examples = int(_metrics(m)[protocol.NUM_EXAMPLES])
            if rec is None or protocol.OUTPUT_BIAS not in rec or examples == 0:
                continue  # masked, or an institution that did not train (its budget spent)
            view["replies"][self.ledger.name_of(m.metadata.src_node_id)] = {
                **self._seen(rec), "examples": examples}
        return view

    def _seen(self, rec: ArrayRecord) -> dict:
        from fedsilo.privacy.labels import mean_input_logits

        sent_b, sent_w = self._sent_bias, self._sent_weight
        db = rec[protocol.OUTPUT_BIAS].numpy().astype(np.float64) - sent_b
        dw = rec[protocol.OUTPUT_WEIGHT].numpy().astype(np.float64) - sent_w
        return {"update": db.tolist(),
                "logits": mean_input_logits(sent_w, sent_b, dw, db).tolist()}

    def stop_if_training_failed(self, server_round: int, replies: list[Message]) -> None:
        """With ``strategy.on_failure = 'stop'``: ClientFailure naming who failed training
        round ``server_round``, before anything of the round is recorded (a failed message
        that also carried an evaluation is a training failure first)."""
        if self.skip_below is None and not self.tolerates_dropouts:
            self.ledger.check(server_round, "training", self.ledger.in_order(list(replies)))

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        replies = self._received(server_round, "evaluation", replies)
        out = self.inner.aggregate_evaluate(server_round, replies)
        self._aggregated(server_round, "evaluation")
        return out

    def _received(self, server_round: int, stage: str, replies: Iterable[Message]
                  ) -> list[Message]:
        """Check and record a stage's replies; ClientFailure if an institution failed."""
        self._t_aggregate = time.perf_counter()
        start = self.ledger.phase_start.get((server_round, stage), self._t_aggregate)
        self.ledger.timing.setdefault(server_round, {})[f"{stage}_phase_s"] = \
            self._t_aggregate - start
        replies = self.ledger.check(server_round, stage, self.ledger.in_order(list(replies)),
                                    tolerate=stage == "training" and self.tolerates_dropouts,
                                    skip_below=self.skip_below)
        self.ledger.record(server_round, stage, replies)
        return replies

    def _aggregated(self, server_round: int, stage: str) -> None:
        self.ledger.timing[server_round][f"{stage}_aggregate_s"] = \
            time.perf_counter() - self._t_aggregate

    def _record_selection(self, server_round: int, answered: list[Message]) -> None:
        """Which institutions' updates Krum/MultiKrum keeps this round (Flower's own
        selection function on the same replies), so a run shows whom it rejected."""
        sender = {id(m.content): m.metadata.src_node_id for m in answered}
        kept = select_multikrum([m.content for m in answered],
                                num_malicious_nodes=self.inner.num_malicious_nodes,
                                num_nodes_to_select=self.inner.num_nodes_to_select)
        self.ledger.selected[server_round] = sorted(
            self.ledger.name_of(sender[id(c)]) for c in kept)

    # -- what a checkpoint keeps, and a resumed run gets back ---------------------------------
    def state(self) -> dict[str, np.ndarray]:
        """The server-side state a resume needs, as named arrays: FedAdam/FedYogi/FedAdagrad
        moments, FedAvgM's momentum and its own copy of the weights, SCAFFOLD's control
        variate (empty for stateless ones)."""
        inner = self.inner
        out: dict[str, np.ndarray] = {}
        for attr in ("m_t", "v_t", "control"):
            for k, v in (getattr(inner, attr, None) or {}).items():
                out[f"{attr}/{k}"] = np.asarray(v)
        momentum = getattr(inner, "momentum_vector", None)
        current = getattr(inner, "current_arrays", None)
        if momentum is not None and isinstance(current, ArrayRecord):
            for k, v in zip(current.keys(), momentum, strict=True):
                out[f"momentum/{k}"] = np.asarray(v)
            out.update({f"current/{k}": v for k, v in from_record(current).items()})
        return out

    def scalars(self) -> dict:
        """The rest of the state, as JSON: institution-level DP's releases and norm."""
        if self.account is None:
            return {}
        return {"central_dp_rounds": self.account.rounds,
                "clipping_norm": float(self.inner.clipping_norm)}

    def restore(self, arrays: dict[str, np.ndarray], scalars: dict) -> None:
        """Put back what ``state`` and ``scalars`` saved."""
        inner = self.inner
        groups: dict[str, dict[str, np.ndarray]] = {}
        for name, v in arrays.items():
            group, key = name.split("/", 1)
            groups.setdefault(group, {})[key] = v
        for attr in ("m_t", "v_t", "control"):
            if attr in groups:
                setattr(inner, attr, groups[attr])
        if "momentum" in groups:
            inner.current_arrays = to_record(groups["current"])
            inner.momentum_vector = [groups["momentum"][k] for k in groups["current"]]
        if self.account is not None and scalars:
            self.account.rounds = int(scalars["central_dp_rounds"])
            inner.clipping_norm = float(scalars["clipping_norm"])


def _metrics(msg: Message):
    return next(iter(msg.content.metric_records.values()))


def _as_dtypes(arrays: ArrayRecord, dtypes: dict) -> ArrayRecord:
    """Server optimisers (FedAdam's float64 step size) can widen the arrays; the global
    model keeps the dtype it was sent with, so bytes and checkpoints stay comparable."""
    if all(arrays[k].numpy().dtype == dtypes.get(k) for k in arrays.keys()):
        return arrays
    return to_record({k: v.astype(dtypes.get(k, v.dtype))
                      for k, v in from_record(arrays).items()})
