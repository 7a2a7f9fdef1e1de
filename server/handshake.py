"""The handshake: before round 1, the server waits for the node of every institution it
expects and asks each which institution it serves.

A node answers with its institution's name and kind and how many examples it holds, and
nothing else (fedsilo.protocol.INFO_KEYS). The server never learns where a node's data
lives. It checks the claims: every expected institution answered (within
``federation.wait_s``), no other institution and none twice, and a node registered with the
SuperLink under a name (``flwr supernode register --name``) serves that institution only.
"""

from __future__ import annotations

import time

from flwr.app import Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedsilo import config, protocol
from fedsilo.config import ConfigError
from server.transport import exchange
from strategies import ClientFailure, short_reason


def handshake(grid: Grid, s: config.Scenario, names: list[str], count: int | None,
              poll_s: float = 0.5) -> dict[int, dict]:
    """Node id -> its institution's description, ordered by institution name, for the
    institutions ``names`` (or, when only their number is known, ``count`` of them); a
    ClientFailure naming what is missing or wrong when the federation is incomplete."""
    if count is None:
        raise ConfigError("config: 'federation.institutions' must name the institutions to "
                          "wait for: with a natural split of a file the server cannot know "
                          "them (`fedsilo run` finds them in the data)")
    deadline = time.monotonic() + s.federation.wait_s
    roster: dict[int, dict] = {}
    asked: set[int] = set()
    while True:
        new = sorted(set(grid.get_node_ids()) - asked)
        if new:
            roster.update(_ask(grid, new, s))
            asked.update(new)
            _check_claims(grid, roster, names)
        if (set(names) <= {i["institution"] for i in roster.values()}) if names \
                else len(roster) >= count:
            break
        if time.monotonic() >= deadline:
            raise ClientFailure(_missing(roster, names, count, s.federation.wait_s))
        time.sleep(poll_s)
    return dict(sorted(roster.items(), key=lambda kv: kv[1]["institution"]))


def _ask(grid: Grid, nodes: list[int], s: config.Scenario) -> dict[int, dict]:
    msgs = [Message(RecordDict(), message_type=MessageType.QUERY, dst_node_id=n)
            for n in nodes]
    found, problems, answered = {}, [], set()
    for reply in exchange(grid, msgs, timeout=s.strategy.round_timeout_s):
        node = reply.metadata.src_node_id
        answered.add(node)
        if reply.has_error():
            problems.append(f"node {node} could not start: {short_reason(reply.error.reason)}")
        else:
            found[node] = dict(reply.content[protocol.INFO])
    problems += [f"node {n} did not answer the handshake within strategy.round_timeout_s"
                 for n in sorted(set(nodes) - answered)]
    if problems:
        raise ClientFailure("; ".join(problems))
    return found


def _check_claims(grid: Grid, roster: dict[int, dict], names: list[str]) -> None:
    claimed = [i["institution"] for i in roster.values()]
    twice = sorted({n for n in claimed if claimed.count(n) > 1})
    if twice:
        nodes = [str(n) for n, i in sorted(roster.items()) if i["institution"] == twice[0]]
        raise ClientFailure(f"two nodes ({', '.join(nodes)}) serve the same institution "
                            f"'{twice[0]}'")
    unknown = sorted(set(claimed) - set(names)) if names else []
    if unknown:
        raise ClientFailure(f"a node serves institution '{unknown[0]}', which "
                            f"federation.institutions does not name ({', '.join(names)})")
    registered = {n.node_id: n.name for n in grid.get_nodes()}
    for node, info in roster.items():
        name = registered.get(node, "")
        if name and name != info["institution"]:
            raise ClientFailure(f"node {node} is registered as '{name}' but claims "
                                f"institution '{info['institution']}'")


def _missing(roster: dict[int, dict], names: list[str], count: int, wait_s: float) -> str:
    if names:
        seen = {i["institution"] for i in roster.values()}
        missing = [n for n in names if n not in seen]
        return (f"no node of institution {', '.join(repr(n) for n in missing)} connected "
                f"within federation.wait_s = {wait_s:g} s")
    return (f"{len(roster)} of the scenario's {count} institutions connected within "
            f"federation.wait_s = {wait_s:g} s")
