"""Where aggregation happens: a factory from the scenario to a Flower strategy.

``build_strategy`` returns one of Flower's Message-API strategies with our ``Tracked``
mixin, which records every institution's reply per round, computes federation-wide
metrics from summed confusion matrices, and turns any client error or missing reply into a
``ClientFailure`` that stops the run (Flower itself only logs those).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp import strategy as fl

from fedsilo.config import Scenario, sampled_per_round
from fedsilo.metrics import confusion_from_flat, scores_from_confusion
from fedsilo.models import arrays_nbytes
from fedsilo.privacy.central import CentralAccount
from strategies.central_dp import UniformMean, wrap_central_dp
from strategies.scaffold import Scaffold
from strategies.secagg import SecureAggregation

# How clients/app.py words a failure; Ray wraps it in a traceback on its way to the server.
_OWN_FAILURE = re.compile(r"institution '[^'\n]+' \([a-z]+\) failed in [^\n]*")


def short_reason(reason: str) -> str:
    """The line of a client error that says what went wrong, without Ray's traceback."""
    ours = _OWN_FAILURE.findall(reason)
    if ours:  # clients/app.py's own wording names the institution and the stage
        return ours[-1].rstrip("'>").strip()
    lines = [ln.strip() for ln in reason.replace("\\n", "\n").splitlines() if ln.strip()]
    return (lines[-1] if lines else reason).rstrip("'>").strip()


class ClientFailure(RuntimeError):
    """One or more institutions failed in a round; the message names them and why."""


def aggregate_evaluate_metrics(records: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """Federation-wide metrics over the union of the institutions' test splits.

    Accuracy and macro-F1 come from the summed confusion matrices (exact, not an average
    of per-institution scores); the loss is the example-weighted mean.
    """
    total = None
    loss_sum, n = 0.0, 0
    for rec in records:
        m = next(iter(rec.metric_records.values()))
        flat = list(m["confusion"])
        size = int(round(len(flat) ** 0.5))
        conf = confusion_from_flat(flat, size)
        total = conf if total is None else total + conf
        loss_sum += float(m["loss"]) * int(m[weighted_by_key])
        n += int(m[weighted_by_key])
    acc, f1 = scores_from_confusion(total)
    return MetricRecord({"accuracy": acc, "macro-f1": f1, "loss": loss_sum / max(n, 1),
                         "num-examples": n})


class RoundLedger:
    """What happened in each round, per institution: replies, metrics, errors, bytes."""

    def __init__(self, roster: dict[int, dict]):
        self.roster = roster  # node id -> {"institution", "kind", "index", ...}
        self.by_index = {info["index"]: info for info in roster.values()}
        self.train: dict[int, dict[str, dict]] = {}
        self.evaluate: dict[int, dict[str, dict]] = {}
        self.bytes_down: dict[int, int] = {}
        self.bytes_up: dict[int, int] = {}
        self.sent: dict[tuple[int, str], list[int]] = {}
        self.secagg: dict[int, dict] = {}  # round -> the protocol's cost and survivors
        self.central_dp: dict[int, dict] = {}  # round -> clipping norm and noise used
        self.selected: dict[int, list[str]] = {}  # round -> whose updates Krum kept
        # seconds per round: phase wall time (send -> all replies in) and aggregation
        self.timing: dict[int, dict[str, float]] = {}
        self._phase_start: dict[tuple[int, str], float] = {}

    def name_of(self, node_id: int) -> str:
        info = self.roster.get(node_id)
        return info["institution"] if info else f"node {node_id}"

    def check(self, server_round: int, stage: str, replies: list[Message],
              tolerate: bool = False) -> list[Message]:
        """Raise ClientFailure if any sampled institution errored or did not reply; with
        ``tolerate`` (secure aggregation's training stage) pass the replies on: the protocol
        records who dropped and decides whether the round can finish."""
        problems = []
        replied = set()
        for msg in replies:
            replied.add(msg.metadata.src_node_id)
            if msg.has_error():
                reason = short_reason(msg.error.reason)
                if _OWN_FAILURE.match(reason):
                    problems.append(reason)
                else:
                    problems.append(f"institution '{self.name_of(msg.metadata.src_node_id)}'"
                                    f" failed in {stage} (round {server_round}): {reason}")
        for node in self.sent.get((server_round, stage), []):
            if node not in replied:
                problems.append(f"institution '{self.name_of(node)}' sent no {stage} reply "
                                f"in round {server_round} (timed out)")
        if problems and not tolerate:
            raise ClientFailure("; ".join(problems))
        return replies

    def record(self, server_round: int, stage: str, replies: list[Message]) -> None:
        book = self.train if stage == "training" else self.evaluate
        rows = book.setdefault(server_round, {})
        for msg in replies:
            if msg.has_error():
                continue
            metrics = dict(next(iter(msg.content.metric_records.values())))
            name = self.by_index[int(metrics["institution-id"])]["institution"]
            rows[name] = metrics
            if stage == "training":
                up = sum(arrays_nbytes(a) for a in msg.content.array_records.values())
                self.bytes_up[server_round] = self.bytes_up.get(server_round, 0) + up


class Tracked:
    """Mixin for a Flower strategy: bookkeeping and loud failure, aggregation untouched."""

    ledger: RoundLedger
    tolerates_dropouts = False  # True for secure aggregation without institution-level DP
    on_round_start = None  # optional callback(server_round, stage, num_nodes)
    _sent_dtypes: dict = {}

    def _sent(self, server_round: int, stage: str, msgs: Iterable[Message]) -> list[Message]:
        msgs = list(msgs)
        self.ledger.sent[(server_round, stage)] = [m.metadata.dst_node_id for m in msgs]
        down = sum(arrays_nbytes(a) for m in msgs for a in m.content.array_records.values())
        self.ledger.bytes_down[server_round] = self.ledger.bytes_down.get(server_round, 0) + down
        if self.on_round_start is not None:
            self.on_round_start(server_round, stage, len(msgs))
        self.ledger._phase_start[(server_round, stage)] = time.perf_counter()
        return msgs

    def _aggregate(self, server_round: int, stage: str, replies: Iterable[Message], agg):
        t0 = time.perf_counter()
        timing = self.ledger.timing.setdefault(server_round, {})
        timing[f"{stage}_phase_s"] = t0 - self.ledger._phase_start.get((server_round, stage), t0)
        replies = self.ledger.check(server_round, stage, list(replies),
                                    tolerate=stage == "training" and self.tolerates_dropouts)
        self.ledger.record(server_round, stage, replies)
        answered = [m for m in replies if not m.has_error()]
        if stage == "training" and answered and all(
                int(next(iter(m.content.metric_records.values()))["num-examples"]) == 0
                for m in answered):
            raise ClientFailure(f"no institution trained in round {server_round}: every "
                                f"sampled institution has spent its privacy budget "
                                f"(privacy.max_epsilon)")
        if stage == "training" and hasattr(self, "num_nodes_to_select"):
            self._record_selection(server_round, replies)
        out = agg(server_round, replies)
        if stage == "training" and out[0] is not None:
            out = (_as_sent_dtype(out[0], self._sent_dtypes), out[1])
        timing[f"{stage}_aggregate_s"] = time.perf_counter() - t0
        return out

    def _record_selection(self, server_round: int, replies: list[Message]) -> None:
        """Which institutions' updates Krum/MultiKrum keeps this round (Flower's own
        selection function on the same replies), so a run shows whom it rejected."""
        from flwr.serverapp.strategy.multikrum import select_multikrum

        contents = [m.content for m in replies if not m.has_error()]
        kept = select_multikrum(contents, num_malicious_nodes=self.num_malicious_nodes,
                                num_nodes_to_select=self.num_nodes_to_select)
        self.ledger.selected[server_round] = sorted(
            self.ledger.by_index[int(c["metrics"]["institution-id"])]["institution"]
            for c in kept)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._sent_dtypes = {k: v.numpy().dtype for k, v in arrays.items()}
        msgs = super().configure_train(server_round, arrays, config, grid)
        return self._sent(server_round, "training", msgs)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        msgs = super().configure_evaluate(server_round, arrays, config, grid)
        return self._sent(server_round, "evaluation", msgs)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        return self._aggregate(server_round, "training", replies, super().aggregate_train)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]):
        return self._aggregate(server_round, "evaluation", replies,
                               super().aggregate_evaluate)


def _as_sent_dtype(arrays: ArrayRecord, dtypes: dict) -> ArrayRecord:
    """Server optimisers (FedAdam's float64 step size) can widen the arrays; the global
    model keeps the dtype it was sent with, so bytes and checkpoints stay comparable."""
    if all(arrays[k].numpy().dtype == dtypes.get(k) for k in arrays.keys()):
        return arrays
    return ArrayRecord({k: Array(np.ascontiguousarray(v.numpy().astype(dtypes.get(
        k, v.numpy().dtype)))) for k, v in arrays.items()})


def strategy_state(strategy) -> dict[str, np.ndarray]:
    """The server-side state a resume needs, as named arrays: FedAdam/FedYogi/FedAdagrad
    moments, FedAvgM's momentum, SCAFFOLD's control variate (empty for stateless ones)."""
    out: dict[str, np.ndarray] = {}
    for attr in ("m_t", "v_t", "control"):
        for k, v in (getattr(strategy, attr, None) or {}).items():
            out[f"{attr}/{k}"] = np.asarray(v)
    momentum = getattr(strategy, "momentum_vector", None)
    current = getattr(strategy, "current_arrays", None)
    if momentum is not None and current is not None:
        for k, v in zip(current.keys(), momentum, strict=True):
            out[f"momentum/{k}"] = np.asarray(v)
    return out


def _tracked(cls: type) -> type:
    return type(f"Tracked{cls.__name__}", (Tracked, cls), {"__doc__": cls.__doc__})


STRATEGIES: dict[str, type] = {
    "fedavg": _tracked(fl.FedAvg), "fedprox": _tracked(fl.FedProx),
    "fedavgm": _tracked(fl.FedAvgM), "fedadam": _tracked(fl.FedAdam),
    "fedyogi": _tracked(fl.FedYogi), "fedadagrad": _tracked(fl.FedAdagrad),
    "fedmedian": _tracked(fl.FedMedian), "fedtrimmedavg": _tracked(fl.FedTrimmedAvg),
    "krum": _tracked(fl.Krum), "multikrum": _tracked(fl.MultiKrum),
    "scaffold": _tracked(Scaffold),
}


def strategy_params(s: Scenario) -> dict:
    """The strategy-specific constructor arguments from ``strategy.*``."""
    st = s.strategy
    adaptive = {"eta": st.eta, "eta_l": s.train.lr, "tau": st.tau}
    return {
        "fedprox": {"proximal_mu": st.proximal_mu},
        "fedavgm": {"server_learning_rate": st.server_lr,
                    "server_momentum": st.server_momentum},
        "fedadam": {**adaptive, "beta_1": st.beta_1, "beta_2": st.beta_2},
        "fedyogi": {**adaptive, "beta_1": st.beta_1, "beta_2": st.beta_2},
        "fedadagrad": adaptive,
        "fedtrimmedavg": {"beta": st.trim_beta},
        "krum": {"num_malicious_nodes": st.num_malicious},
        "multikrum": {"num_malicious_nodes": st.num_malicious,
                      "num_nodes_to_select": st.krum_select},
        "scaffold": {"server_lr": st.server_lr},
    }.get(st.name, {})


def build_strategy(s: Scenario, ledger: RoundLedger, num_nodes: int,
                   max_weight: float = 1.0) -> Tracked:
    """The scenario's strategy, sampling institutions as ``strategy.*`` says, with secure
    aggregation and institution-level DP around it when ``privacy.*`` asks for them."""
    st, central, sa = s.strategy, s.privacy.central, s.privacy.secagg
    min_train = min(st.min_train_clients, num_nodes)
    args = dict(fraction_train=st.fraction_train, fraction_evaluate=st.fraction_evaluate,
                min_train_nodes=min_train, min_evaluate_nodes=min(min_train, num_nodes),
                min_available_nodes=num_nodes, weighted_by_key="num-examples",
                evaluate_metrics_aggr_fn=aggregate_evaluate_metrics, **strategy_params(s))
    if central.mode == "off" and not sa.enabled:
        strategy = STRATEGIES[st.name](**args)
        strategy.ledger = ledger
        return strategy
    base = {"fedavg": fl.FedAvg, "fedprox": fl.FedProx}[st.name]
    mixins = (SecureAggregation,) if sa.enabled else (UniformMean,)
    if central.mode == "off":  # secure aggregation alone: the protocol is the strategy
        strategy = _tracked(type(f"SecAgg{base.__name__}", (*mixins, base), {}))(**args)
        strategy.tolerates_dropouts = True  # as far as the protocol's threshold allows
        inner = strategy
    else:
        inner = type(f"{'SecAgg' if sa.enabled else 'Uniform'}{base.__name__}",
                     (*mixins, base), {})(**args)
        sampled = sampled_per_round(s, num_nodes)
        strategy = wrap_central_dp(central, inner, sampled, _tracked)
        strategy.account = CentralAccount(central, sampled, num_nodes)
    if sa.enabled:
        inner.secagg, inner.report = sa, ledger.secagg
        inner.max_weight = 1.0 if central.mode != "off" else max_weight
        inner.timeout = st.round_timeout_s
        inner.names = {n: i["institution"] for n, i in ledger.roster.items()}
    strategy.ledger = ledger
    return strategy
