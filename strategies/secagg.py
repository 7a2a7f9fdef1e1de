"""Secure aggregation: the server learns only the (weighted) sum of the institutions' updates.

The protocol is SecAgg+ (Bell et al., 2020) as Flower implements it: each node runs
Flower's own ``secaggplus_mod`` (clients/app.py puts it in front of the train handler),
and this module drives the server's side of the four stages with Flower's primitives
(Shamir shares, key agreement, the masks' pseudo-random generator, quantisation):

1. setup: the sampled nodes learn the protocol's parameters and answer with two public keys;
2. share keys: each node gets its neighbours' keys and answers with encrypted shares of its
   mask seed and its first private key, one per neighbour;
3. collect masked vectors: each node gets the shares addressed to it and the training
   message, trains, and answers with its quantised update, weighted and masked (a private
   mask plus one pairwise mask per neighbour) -- and with its declared metrics;
4. unmask: each surviving node sends the shares the server needs to remove the private masks
   of surviving nodes and the pairwise masks of nodes that dropped out after step 2.

What travels is the update (trained weights minus the global ones), scaled by the node's
weight (its number of training examples, or 1 under institution-level DP) over the largest
weight, clipped to ``privacy.secagg.clip_range`` per coordinate and quantised to
``quantization_bits``; sums are taken modulo 2^32. The server only ever adds masked vectors
and subtracts masks: no individual update exists on the server at any point.

Dropouts: a node that fails or times out in any stage is dropped for the round, and the
round still completes as long as every node keeps at least ``threshold`` live neighbours;
otherwise the run stops, naming who dropped.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.common import bytes_to_ndarray
from flwr.serverapp import Grid
from flwr.serverapp import strategy as fl

from fedsilo import protocol
from fedsilo.arrays import from_record, to_record
from fedsilo.config import SecAggSection
from fedsilo.flower_compat import (
    RECORD_KEY_CONFIGS,
    Key,
    Stage,
    bytes_to_private_key,
    bytes_to_public_key,
    combine_shares,
    dequantize,
    factor_extract,
    generate_shared_key,
    get_parameters_shape,
    parameters_addition,
    parameters_mod,
    parameters_subtraction,
    pseudo_rand_gen,
)

MOD_RANGE = 2 ** 32


class SecAggFailure(RuntimeError):
    """Too many institutions dropped out for the protocol to finish the round."""


def config_nbytes(rec: ConfigRecord) -> int:
    """Payload bytes of a protocol record: bytes as they are, 8 per number."""
    total = 0
    for v in rec.values():
        for item in v if isinstance(v, list) else [v]:
            total += len(item) if isinstance(item, (bytes, str)) else 8
    return total


def share_counts(cfg: SecAggSection, sampled: int) -> tuple[int, int]:
    """(shares, threshold) for a round with ``sampled`` nodes, as Flower's workflow derives
    them: fractions are of the sampled nodes and of the shares; shares are made odd."""
    if cfg.shares <= 1:
        shares = round(cfg.shares * sampled)
        if shares < sampled and shares % 2 == 0:
            shares += 1
        if shares <= 2:
            shares = sampled
    else:
        shares = int(cfg.shares)
    shares = min(shares, sampled)
    if sampled != shares and shares % 2 == 0:
        shares += 1
    threshold = max(round(cfg.threshold * shares), 2) if cfg.threshold <= 1 \
        else int(cfg.threshold)
    return shares, min(threshold, shares)


@dataclass
class _Round:
    """The server's view of one round of the protocol: keys, routing, sums; no updates."""

    sampled: set[int]
    neighbours: dict[int, set[int]]
    shares: int
    threshold: int
    active: set[int] = field(default_factory=set)
    public_keys: dict[int, list[bytes]] = field(default_factory=dict)
    forward: dict[int, tuple[list[int], list[bytes]]] = field(default_factory=dict)
    shared: set[int] = field(default_factory=set)  # nodes whose key shares went out
    dropped: dict[int, str] = field(default_factory=dict)  # node -> stage and reason
    cost: dict[str, float] = field(default_factory=dict)


class SecureAggregation:
    """Mixin for FedAvg/FedProx: training replies are summed under SecAgg+.

    ``secagg``: the scenario's section; ``max_weight``: the largest weight a node may use
    (1 under institution-level DP, whose weights are equal); ``timeout``: seconds to wait in
    each stage; ``names``: node id -> institution, for messages; ``report``: round ->
    survivors, dropouts, seconds and bytes (the run ledger's ``secagg``).
    """

    def __init__(self, *, secagg: SecAggSection, max_weight: float, timeout: float | None,
                 names: dict[int, str], report: dict[int, dict], **kwargs):
        super().__init__(**kwargs)
        self.secagg, self.max_weight, self.timeout = secagg, max_weight, timeout
        self.names, self.report = names, report
        self.rounds: dict[int, _Round] = {}

    # -- the protocol's first two stages run before the training message is sent -------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid):
        msgs = list(super().configure_train(server_round, arrays, config, grid))
        self._grid, self._current = grid, arrays
        nodes = [m.metadata.dst_node_id for m in msgs]
        if len(nodes) < 2:
            raise SecAggFailure(f"secure aggregation needs at least 2 institutions in a "
                                f"round; round {server_round} sampled {len(nodes)}")
        shares, threshold = share_counts(self.secagg, len(nodes))
        order = list(nodes)
        random.Random(f"{server_round}").shuffle(order)  # who neighbours whom
        half = shares // 2
        neighbours = {nid: {order[(i + o) % len(order)] for o in range(-half, half + 1)}
                      for i, nid in enumerate(order)}
        st = self.rounds[server_round] = _Round(set(nodes), neighbours, shares, threshold,
                                                active=set(nodes))
        st.cost.update({"bytes_down": 0.0, "bytes_up": 0.0})
        t0 = time.perf_counter()
        self._setup(server_round, st)
        self._share_keys(server_round, st)
        st.cost["keys_s"] = time.perf_counter() - t0
        out = []
        for m in msgs:
            nid = m.metadata.dst_node_id
            if nid not in st.active:
                continue
            srcs, ctxts = st.forward.get(nid, ([], []))
            rec = ConfigRecord({Key.STAGE: Stage.COLLECT_MASKED_VECTORS,
                                Key.CIPHERTEXT_LIST: ctxts, Key.SOURCE_LIST: srcs})
            st.cost["bytes_down"] += config_nbytes(rec)
            content = RecordDict(dict(m.content))  # Flower shares one RecordDict among all
            content[RECORD_KEY_CONFIGS] = rec
            out.append(Message(content, dst_node_id=nid, message_type=MessageType.TRAIN,
                               group_id=str(server_round)))
        self._t_masked = time.perf_counter()
        return out

    def _exchange(self, server_round: int, st: _Round, stage: str,
                  records: dict[int, ConfigRecord]) -> dict[int, ConfigRecord]:
        """Send each live node its record; return the protocol records of those that
        answered, dropping the rest."""
        msgs = []
        for nid, rec in records.items():
            st.cost["bytes_down"] += config_nbytes(rec)
            msgs.append(Message(RecordDict({RECORD_KEY_CONFIGS: rec}), dst_node_id=nid,
                                message_type=MessageType.TRAIN, group_id=str(server_round)))
        answers: dict[int, ConfigRecord] = {}
        for reply in self._grid.send_and_receive(msgs, timeout=self.timeout):
            nid = reply.metadata.src_node_id
            if reply.has_error():
                st.dropped[nid] = f"{stage}: {reply.error.reason.strip().splitlines()[-1]}"
                continue
            rec = reply.content.config_records[RECORD_KEY_CONFIGS]
            st.cost["bytes_up"] += config_nbytes(rec)
            answers[nid] = rec
        for nid in set(records) - set(answers) - set(st.dropped):
            st.dropped[nid] = f"{stage}: no reply (timed out)"
        st.active &= set(answers)
        return answers

    def _check(self, server_round: int, st: _Round, stage: str) -> None:
        for nid in st.sampled:
            if len(st.neighbours[nid] & st.active) < st.threshold:
                who = "; ".join(f"'{self.names.get(n, n)}' ({why})"
                                for n, why in sorted(st.dropped.items()))
                raise SecAggFailure(
                    f"secure aggregation cannot finish round {server_round} after the "
                    f"{stage} stage: '{self.names.get(nid, nid)}' has "
                    f"{len(st.neighbours[nid] & st.active)} live neighbours, fewer than the "
                    f"threshold {st.threshold}; dropped: {who or 'none'}")

    def _setup(self, server_round: int, st: _Round) -> None:
        q_range = 2 ** self.secagg.quantization_bits
        rec = {Key.STAGE: Stage.SETUP, Key.SAMPLE_NUMBER: len(st.sampled),
               Key.SHARE_NUMBER: st.shares, Key.THRESHOLD: st.threshold,
               Key.CLIPPING_RANGE: float(self.secagg.clip_range), Key.TARGET_RANGE: q_range,
               Key.MOD_RANGE: MOD_RANGE, Key.MAX_WEIGHT: float(self.max_weight)}
        answers = self._exchange(server_round, st, "setup",
                                 {nid: ConfigRecord(dict(rec)) for nid in st.active})
        st.public_keys = {nid: [a[Key.PUBLIC_KEY_1], a[Key.PUBLIC_KEY_2]]
                          for nid, a in answers.items()}
        self._check(server_round, st, "setup")

    def _share_keys(self, server_round: int, st: _Round) -> None:
        records = {}
        for nid in st.active:
            rec = ConfigRecord({str(n): st.public_keys[n]
                                for n in st.neighbours[nid] & st.active})
            rec[Key.STAGE] = Stage.SHARE_KEYS
            records[nid] = rec
        answers = self._exchange(server_round, st, "share keys", records)
        st.shared = set(answers)
        st.forward = {nid: ([], []) for nid in st.active}
        for src, a in answers.items():
            for dst, ctxt in zip(a[Key.DESTINATION_LIST], a[Key.CIPHERTEXT_LIST], strict=True):
                if dst in st.forward:
                    st.forward[dst][0].append(src)
                    st.forward[dst][1].append(ctxt)
        self._check(server_round, st, "share keys")

    # -- stage 3 and 4: sum the masked vectors, then remove the masks --------------------
    def aggregate_train(self, server_round: int, replies):
        st = self.rounds.pop(server_round)
        replies = list(replies)
        answered = {r.metadata.src_node_id for r in replies}
        ok = []
        for r in replies:
            nid = r.metadata.src_node_id
            if r.has_error():
                st.dropped[nid] = f"training: {r.error.reason.strip().splitlines()[-1]}"
            else:
                ok.append(r)
        for nid in st.active - answered:
            st.dropped.setdefault(nid, "training: no reply (timed out)")
        st.active = {r.metadata.src_node_id for r in ok}
        st.cost["train_s"] = time.perf_counter() - self._t_masked
        self._check(server_round, st, "masked vectors")
        total = None
        for r in ok:
            rec = r.content.config_records[RECORD_KEY_CONFIGS]
            st.cost["bytes_up"] += config_nbytes(rec)
            vec = [bytes_to_ndarray(b) for b in rec[Key.MASKED_PARAMETERS]]
            total = vec if total is None else parameters_addition(total, vec)
        total = parameters_mod(total, MOD_RANGE)
        t0 = time.perf_counter()
        mean_update = self._unmask(server_round, st, total)
        st.cost["unmask_s"] = time.perf_counter() - t0
        current = from_record(self._current)
        arrays = to_record({k: (x.astype(np.float64) + u).astype(x.dtype)
                            for (k, x), u in zip(current.items(), mean_update, strict=True)})
        # the metrics are the declared per-institution scalars, in the clear
        contents = [r.content for r in ok]
        metrics = self.train_metrics_aggr_fn(
            [RecordDict({protocol.METRICS: c[protocol.METRICS]}) for c in contents],
            self.weighted_by_key)
        self.report[server_round] = {"institutions": len(st.sampled), "survived": len(st.active),
                           "shares": st.shares, "threshold": st.threshold,
                           "dropped": {self.names.get(n, str(n)): why
                                       for n, why in sorted(st.dropped.items())},
                           **st.cost}
        return arrays, metrics

    def _unmask(self, server_round: int, st: _Round, masked: list[np.ndarray]):
        survivors = set(st.active)
        dead = st.shared - survivors  # their pairwise masks are in the survivors' vectors
        records = {nid: ConfigRecord({
            Key.STAGE: Stage.UNMASK,
            Key.ACTIVE_NODE_ID_LIST: sorted(st.neighbours[nid] & survivors),
            Key.DEAD_NODE_ID_LIST: sorted(st.neighbours[nid] & dead)}) for nid in survivors}
        answers = self._exchange(server_round, st, "unmask", records)
        collected: dict[int, list[bytes]] = {nid: [] for nid in survivors | dead}
        for a in answers.values():
            for owner, share in zip(a[Key.NODE_ID_LIST], a[Key.SHARE_LIST], strict=True):
                collected[owner].append(share)
        shapes = get_parameters_shape(masked)
        for nid, shares in collected.items():
            if len(shares) < st.threshold:
                raise SecAggFailure(
                    f"secure aggregation cannot finish round {server_round}: only "
                    f"{len(shares)} shares of '{self.names.get(nid, nid)}' arrived, fewer "
                    f"than the threshold {st.threshold}")
            secret = combine_shares(shares)
            if nid in survivors:  # its private mask
                masked = parameters_subtraction(
                    masked, pseudo_rand_gen(secret, MOD_RANGE, shapes))
                continue
            # a node that dropped after sharing keys: cancel its pairwise masks
            sk1 = bytes_to_private_key(secret)
            for other in (st.neighbours[nid] & survivors) - {nid}:
                mask = pseudo_rand_gen(
                    generate_shared_key(sk1, bytes_to_public_key(st.public_keys[other][0])),
                    MOD_RANGE, shapes)
                masked = (parameters_addition(masked, mask) if nid > other
                          else parameters_subtraction(masked, mask))
        masked = parameters_mod(masked, MOD_RANGE)
        weight_sum, summed = factor_extract(masked)
        if weight_sum == 0:
            raise SecAggFailure(f"round {server_round}: every surviving institution sent "
                                f"weight 0 (nothing trained)")
        q_range = 2 ** self.secagg.quantization_bits
        clip = self.secagg.clip_range
        out = dequantize(summed, clip, q_range)
        offset = -(len(survivors) - 1) * clip
        return [(v + offset) * (q_range / weight_sum) for v in out]


class SecAggFedAvg(SecureAggregation, fl.FedAvg):
    """FedAvg whose training replies are summed under SecAgg+."""


class SecAggFedProx(SecureAggregation, fl.FedProx):
    """FedProx whose training replies are summed under SecAgg+."""
