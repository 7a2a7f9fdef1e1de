"""An institution's memory in its Flower node state, with its copy on the node's disk
(fedsilo.node.memory) for a resumed run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, RecordDict

from fedsilo import protocol
from fedsilo.arrays import from_record, to_record
from fedsilo.node import memory
from fedsilo.node.memory import Memory
from fedsilo.node.silo import Silo


def recall(state: RecordDict, kept: Path, server_round: int, silo: Silo) -> Memory:
    """The institution's memory as the previous round left it: from its node state, or,
    in a resumed run (a fresh node state), from its own disk."""
    mem = Memory()
    if protocol.STATE_ROUND in state:
        mem.round = int(state[protocol.STATE_ROUND]["round"])
    if protocol.STATE_SCAFFOLD_VARIATE in state:
        mem.scaffold_variate = from_record(state[protocol.STATE_SCAFFOLD_VARIATE], np.float32)
    if protocol.STATE_DP in state:
        mem.dp_steps = int(state[protocol.STATE_DP]["steps"])
    if protocol.STATE_PERSONAL in state:
        mem.personal = from_record(state[protocol.STATE_PERSONAL], np.float32)
    if mem.round == server_round - 1 or server_round == 1 or not _keeps_memory(silo):
        return mem
    if 0 < mem.round < server_round - 1:  # not sampled since: what it keeps is current
        return mem
    # a resumed run (a fresh node state): the copy on its own disk of the last round it
    # trained up to round server_round - 1, or nothing if it never trained
    saved = memory.restore_latest(kept, server_round - 1)
    return Memory() if saved is None else saved


def remember(state: RecordDict, kept: Path, mem: Memory) -> None:
    """Keep the institution's memory in its node state for the next round, and a copy on
    its own disk for a resumed run."""
    state[protocol.STATE_ROUND] = ConfigRecord({"round": mem.round})
    if mem.scaffold_variate is not None:
        state[protocol.STATE_SCAFFOLD_VARIATE] = to_record(mem.scaffold_variate, np.float32)
    if mem.dp_steps is not None:
        state[protocol.STATE_DP] = ConfigRecord({"steps": mem.dp_steps})
    if mem.personal is not None:
        state[protocol.STATE_PERSONAL] = to_record(mem.personal, np.float32)
    if not mem.empty():
        memory.store(kept, mem)


def personal_model(state: RecordDict, kept: Path, server_round: int):
    """The personal model as round ``server_round`` left it (to evaluate it): from the node
    state, or from the node's disk in a resumed run; None if it has none yet."""
    if protocol.STATE_PERSONAL in state and protocol.STATE_ROUND in state and \
            int(state[protocol.STATE_ROUND]["round"]) <= server_round:
        return from_record(state[protocol.STATE_PERSONAL], np.float32)
    saved = memory.restore_latest(kept, server_round)
    return None if saved is None else saved.personal


def _keeps_memory(silo: Silo) -> bool:
    s = silo.scenario
    return s.privacy.dp or s.strategy.name == "scaffold" or \
        s.personalize.method in ("ditto", "split")
