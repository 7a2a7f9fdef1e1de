"""The server's ledger of a run: what each institution sent or failed to send, per round.

A Flower strategy only logs a client's error and aggregates what is left; fedsilo instead
turns any error or missing reply into a ``ClientFailure`` that names the institution and
stops the run (secure aggregation decides for itself who may drop out).
"""

from __future__ import annotations

import re

from flwr.app import Message

from fedsilo.arrays import nbytes

# How clients/app.py words a failure; Ray wraps it in a traceback on its way to the server.
_OWN_FAILURE = re.compile(r"institution '[^'\n]+' \([^)\n]*\) failed in [^\n]*")


def short_reason(reason: str) -> str:
    """The line of a client error that says what went wrong, without Ray's traceback."""
    ours = _OWN_FAILURE.findall(reason)
    if ours:  # clients/app.py's own wording names the institution and the stage
        return ours[-1].rstrip("'>").strip()
    lines = [ln.strip() for ln in reason.replace("\\n", "\n").splitlines() if ln.strip()]
    return (lines[-1] if lines else reason).rstrip("'>").strip()


class ClientFailure(RuntimeError):
    """One or more institutions failed in a round; the message names them and why."""


class RoundLedger:
    """What happened in each round, per institution: replies, metrics, errors, bytes."""

    def __init__(self, roster: dict[int, dict]):
        self.roster = roster  # node id -> {"institution", "kind", "num-train", "num-test"}
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
        self.phase_start: dict[tuple[int, str], float] = {}

    def name_of(self, node_id: int) -> str:
        info = self.roster.get(node_id)
        return info["institution"] if info else f"node {node_id}"

    def in_order(self, replies: list[Message]) -> list[Message]:
        """Replies sorted by institution name: whatever order they arrived in, every sum
        over them is taken in the same order, so a run gives the same result twice."""
        return sorted(replies, key=lambda m: (self.name_of(m.metadata.src_node_id),
                                              m.metadata.src_node_id))

    def sending(self, server_round: int, stage: str, msgs: list[Message]) -> None:
        """Note who is asked in this stage and the bytes that go down."""
        self.sent[(server_round, stage)] = [m.metadata.dst_node_id for m in msgs]
        down = sum(nbytes(a) for m in msgs for a in m.content.array_records.values())
        self.bytes_down[server_round] = self.bytes_down.get(server_round, 0) + down

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
            rows[self.name_of(msg.metadata.src_node_id)] = metrics
            if stage == "training":
                up = sum(nbytes(a) for a in msg.content.array_records.values())
                self.bytes_up[server_round] = self.bytes_up.get(server_round, 0) + up
