"""The handshake: before round 1, every node says which institution it serves."""

from __future__ import annotations

import time

from flwr.app import Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedsilo import config, protocol
from strategies import ClientFailure, short_reason


def handshake(grid: Grid, s: config.Scenario, wait_s: float = 60.0) -> dict[int, dict]:
    """Ask every node which institution it serves; return node id -> its description."""
    expected = config.known_institutions(s)
    deadline = time.monotonic() + wait_s
    nodes = list(grid.get_node_ids())
    while expected is not None and len(nodes) < expected and time.monotonic() < deadline:
        time.sleep(1.0)
        nodes = list(grid.get_node_ids())
    if expected is not None and len(nodes) != expected:
        raise ClientFailure(f"the scenario has {expected} institutions but {len(nodes)} "
                            f"nodes are connected")
    msgs = [Message(RecordDict(), message_type=MessageType.QUERY, dst_node_id=n)
            for n in nodes]
    roster: dict[int, dict] = {}
    problems, answered = [], set()
    for reply in grid.send_and_receive(msgs, timeout=s.strategy.round_timeout_s):
        node = reply.metadata.src_node_id
        answered.add(node)
        if reply.has_error():
            problems.append(f"node {node} could not start: {short_reason(reply.error.reason)}")
        else:
            roster[node] = dict(reply.content[protocol.INFO])
    problems += [f"node {n} did not answer the handshake"
                 for n in sorted(set(nodes) - answered)]
    if problems:
        raise ClientFailure("; ".join(problems))
    names = [info["institution"] for info in roster.values()]
    if len(set(names)) != len(names):
        raise ClientFailure(f"two nodes serve the same institution: {sorted(names)}")
    labels = {tuple(info["labels"]) for info in roster.values()}
    if len(labels) != 1:
        raise ClientFailure("institutions disagree on the label set")
    return dict(sorted(roster.items(), key=lambda kv: kv[1]["index"]))
