"""Sending messages and collecting replies, with a short poll.

Flower's ``Grid.send_and_receive`` pulls replies every 3 s; a deployed round would wait
that long for replies that arrived long before. ``exchange`` pushes the messages once and
pulls every ``poll_s`` through the same public Grid API (push_messages, pull_messages).
``FastGrid`` gives strategies that call ``send_and_receive`` themselves (SecAgg+'s key
stages) the same behaviour.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

from fedsilo import interrupt

POLL_S = 0.05


def exchange(grid: Grid, messages: Iterable[Message], timeout: float | None,
             poll_s: float = POLL_S) -> list[Message]:
    """Push ``messages`` and return the replies that came back within ``timeout`` seconds
    (error replies included; a node that never answered has none)."""
    waiting = set(grid.push_messages(list(messages)))
    waiting -= {"", None}
    replies: list[Message] = []
    end = None if timeout is None else time.monotonic() + timeout
    while waiting:
        interrupt.check()  # Ctrl-C / SIGTERM: stop waiting for replies
        got = list(grid.pull_messages(waiting))
        replies += got
        waiting -= {m.metadata.reply_to_message_id for m in got}
        if not waiting or (end is not None and time.monotonic() >= end):
            break
        time.sleep(poll_s)
    return replies


class FastGrid:
    """A Grid whose ``send_and_receive`` polls every ``poll_s``; everything else is the
    wrapped Grid's. With ``order`` (node id -> institution name), ``get_node_ids`` lists
    the nodes by institution name: Flower samples institutions by position in that list
    with the seeded ``random``, so the sample is the same in every run of a scenario
    (node ids themselves are random)."""

    def __init__(self, grid: Grid, poll_s: float = POLL_S, order: dict[int, str] | None = None):
        self._grid, self._poll_s, self._order = grid, poll_s, order

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> list[Message]:
        return exchange(self._grid, messages, timeout, self._poll_s)

    def get_node_ids(self) -> list[int]:
        ids = list(self._grid.get_node_ids())
        if self._order is None:
            return ids
        return sorted(ids, key=lambda n: (n not in self._order, self._order.get(n, ""), n))

    def __getattr__(self, name: str):
        return getattr(self._grid, name)

    @property
    def inner(self) -> Grid:
        return self._grid
