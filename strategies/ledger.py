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


def short_reason(reason: str, limit: int = 240) -> str:
    """The line of a client error that says what went wrong, without Ray's traceback (and
    without the paragraph of advice Ray appends to a dead worker's message)."""
    ours = _OWN_FAILURE.findall(reason)
    if ours:  # clients/app.py's own wording names the institution and the stage
        return ours[-1].rstrip("'>").strip()
    lines = [ln.strip() for ln in reason.replace("\\n", "\n").splitlines() if ln.strip()]
    line = (lines[-1] if lines else reason).strip()
    flower = _FLOWER_REASON.match(line)  # "<class 'pkg.Error'>:<'message'>"
    line = f"{flower[1].rsplit('.', 1)[-1]}: {flower[2]}" if flower else line.rstrip("'>")
    if len(line) > limit and ". " in line[40:]:
        line = line[:line.index(". ", 40) + 1]
    return line


def _after_stage(problem: str) -> str:
    """A problem without the "institution 'x' failed in <stage> (round r): " prefix."""
    return problem.split("): ", 1)[1] if "): " in problem else problem


_FLOWER_REASON = re.compile(r"<class '([\w.]+)'>:<'(.*?)'?>?$")


def reply_metrics(msg: Message) -> dict:
    """A reply's (first) metric record."""
    return next(iter(msg.content.metric_records.values()))


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
        self.dropped: dict[int, dict[str, str]] = {}  # round -> skipped institution -> why
        self.server_view: dict[int, dict] = {}  # round -> what the server held (attack)
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

    def sending(self, server_round: int, stage: str, msgs: list[Message],
                riding: frozenset[int] = frozenset()) -> None:
        """Note who is asked in this stage and the bytes that go down (none for the
        evaluations of the nodes in ``riding``: they ride on a training message)."""
        self.sent[(server_round, stage)] = [m.metadata.dst_node_id for m in msgs]
        down = sum(nbytes(a) for m in msgs if m.metadata.dst_node_id not in riding
                   for a in m.content.array_records.values())
        self.bytes_down[server_round] = self.bytes_down.get(server_round, 0) + down

    def check(self, server_round: int, stage: str, replies: list[Message],
              tolerate: bool = False, skip_below: int | None = None) -> list[Message]:
        """The replies to aggregate. An institution that errored or did not reply stops
        the run (ClientFailure naming it and why), unless
        - ``tolerate`` (secure aggregation's training stage): every reply is passed on, and
          the protocol records who dropped and decides whether the round can finish;
        - ``skip_below`` (``strategy.on_failure = 'skip'``): the institution is left out of
          this round (recorded in ``dropped``) while at least ``skip_below`` replied."""
        problems: dict[str, str] = {}
        replied = set()
        for msg in replies:
            node = msg.metadata.src_node_id
            replied.add(node)
            if msg.has_error():
                reason = short_reason(msg.error.reason)
                problems[self.name_of(node)] = reason if _OWN_FAILURE.match(reason) else (
                    f"institution '{self.name_of(node)}' failed in {stage} (round "
                    f"{server_round}): {reason}")
        for node in self.sent.get((server_round, stage), []):
            if node not in replied:
                problems[self.name_of(node)] = (f"institution '{self.name_of(node)}' sent no "
                                                f"{stage} reply in round {server_round} "
                                                f"(timed out)")
        if not problems or tolerate:
            return replies
        ok = [m for m in replies if not m.has_error()]
        if skip_below is None or len(ok) < skip_below:
            also = "" if skip_below is None else (
                f" (only {len(ok)} replied, fewer than strategy.min_replies = {skip_below})")
            raise ClientFailure("; ".join(problems.values()) + also)
        dropped = self.dropped.setdefault(server_round, {})
        dropped.update({name: f"{stage}: {_after_stage(why)}"
                        for name, why in sorted(problems.items())})
        return ok

    def record(self, server_round: int, stage: str, replies: list[Message]) -> None:
        book = self.train if stage == "training" else self.evaluate
        rows = book.setdefault(server_round, {})
        for msg in replies:
            if msg.has_error():
                continue
            metrics = dict(reply_metrics(msg))
            rows[self.name_of(msg.metadata.src_node_id)] = metrics
            if stage == "training":
                up = sum(nbytes(a) for a in msg.content.array_records.values())
                self.bytes_up[server_round] = self.bytes_up.get(server_round, 0) + up
