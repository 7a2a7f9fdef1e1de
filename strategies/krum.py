"""Whose updates Krum and MultiKrum keep each round (Flower's own selection function on
the same replies), so that a run shows whom it rejected (``ledger.selected``)."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Message

from fedsilo.flower_compat import select_multikrum
from strategies.ledger import RoundLedger
from strategies.wrapper import Around


class RecordsSelection(Around):
    """A Krum or MultiKrum ``inner`` whose selection is noted in ``ledger.selected``."""

    def __init__(self, inner, ledger: RoundLedger):
        super().__init__(inner)
        self.ledger = ledger

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        answered = [m for m in replies if not m.has_error()]
        sender = {id(m.content): m.metadata.src_node_id for m in answered}
        kept = select_multikrum([m.content for m in answered],
                                num_malicious_nodes=self.inner.num_malicious_nodes,
                                num_nodes_to_select=self.inner.num_nodes_to_select)
        self.ledger.selected[server_round] = sorted(
            self.ledger.name_of(sender[id(c)]) for c in kept)
        return self.inner.aggregate_train(server_round, replies)
