"""The node's privacy boundary as a ClientApp mod: every reply passes here last."""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context, Message

from fedsilo import config, protocol
from fedsilo.facts import RunFacts, cache_dir
from fedsilo.facts import read as read_facts
from fedsilo.node.silo import resolve_institution
from fedsilo.privacy.boundary import append_audit, check_reply, describe_reply


def boundary_guard(msg: Message, context: Context, call_next) -> Message:
    """Anything beyond the declared boundary is refused (fedsilo.privacy.boundary), and
    with ``output.audit`` the reply is recorded."""
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    problems = check_reply(msg, reply)
    scenario, facts = read_facts(dict(context.run_config))
    if scenario.output.audit:
        node = dict(context.node_config)
        _, inst = resolve_institution(scenario, node)
        entry = describe_reply(msg, reply) | {"round": _round_of(msg), "refused": problems}
        append_audit(audit_dir(scenario, facts, node) / f"{inst.name}.jsonl", entry)
    if problems:
        raise RuntimeError(f"reply refused at the privacy boundary: {'; '.join(problems)}")
    return reply


def audit_dir(scenario: config.Scenario, facts: RunFacts, node_config: dict) -> Path:
    """Where a node records what it sent: the run directory in a simulation on one
    machine, the node's own cache directory when deployed."""
    if "data-path" in node_config or not facts.dir:
        return Path(str(node_config.get("cache-dir", cache_dir(scenario, facts)))) / "audit"
    return Path(facts.dir) / "audit"


def _round_of(msg: Message) -> int:
    if protocol.CONFIG in msg.content:
        return int(msg.content[protocol.CONFIG][protocol.SERVER_ROUND])
    return int(msg.metadata.group_id) if msg.metadata.group_id.isdigit() else 0
