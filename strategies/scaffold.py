"""SCAFFOLD (Karimireddy et al., 2020), which Flower does not ship: server side.

Each round the server sends the global model x and its control variate c. A client keeps its
own variate c_i across rounds (in its node state), trains K steps of SGD on gradients
corrected by (c - c_i), then (option II) sets c_i+ = c_i - c + (x - y_i) / (K * lr) and
replies with exactly what the protocol needs: the model delta y_i - x and the variate delta
c_i+ - c_i. The server applies
    x <- x + server_lr * mean_i(y_i - x)        c <- c + (|S| / N) * mean_i(c_i+ - c_i)
over the sampled set S of N institutions (unweighted means, as in the paper).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedsilo.arrays import Arrays, from_record, to_record
from fedsilo.protocol import SCAFFOLD_CONTROL, SCAFFOLD_DELTA_C
from fedsilo.training.scaffold import server_update


class Scaffold(FedAvg):
    """SCAFFOLD with FedAvg's sampling and evaluation."""

    def __init__(self, *, server_lr: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.server_lr = server_lr
        self.control: Arrays | None = None
        self.current: Arrays | None = None
        self.num_total = 0

    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """What a checkpoint keeps: the server's control variate c."""
        return {f"control/{k}": np.asarray(v) for k, v in (self.control or {}).items()}, {}

    def restore_checkpoint_state(self, groups: dict[str, dict[str, np.ndarray]],
                                 scalars: dict) -> None:
        if "control" in groups:
            self.control = groups["control"]

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self.current = from_record(arrays)
        if self.control is None:
            self.control = {k: np.zeros_like(v, dtype=np.float32)
                            for k, v in self.current.items()}
        self.num_total = len(list(grid.get_node_ids()))
        msgs = list(super().configure_train(server_round, arrays, config, grid))
        for m in msgs:  # each message gets its own record: add c beside x
            m.content = RecordDict({self.arrayrecord_key: arrays,
                                    SCAFFOLD_CONTROL: to_record(self.control, np.float32),
                                    self.configrecord_key: m.content[self.configrecord_key]})
        return msgs

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(list(replies), is_train=True, validate=False)
        if not valid:
            return None, None
        delta_y = [from_record(m.content[self.arrayrecord_key]) for m in valid]
        delta_c = [from_record(m.content[SCAFFOLD_DELTA_C]) for m in valid]
        x, self.control = server_update(self.current, self.control, delta_y, delta_c,
                                        self.server_lr, self.num_total)
        metrics = self.train_metrics_aggr_fn([m.content for m in valid], self.weighted_by_key)
        return to_record(x, np.float32), metrics
