"""``Around``: a strategy that wraps another the way Flower's DP wrappers do. Every call
goes to ``inner`` unless the wrapper has something to add on the way; attributes it does
not define are the inner strategy's."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy


class Around(Strategy):
    def __init__(self, inner: Strategy):
        self.inner = inner

    def __getattr__(self, name: str):
        if name == "inner":  # not set yet (copying, unpickling)
            raise AttributeError(name)
        return getattr(self.inner, name)

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.inner.aggregate_train(server_round, replies)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)


class KeepsDtypes(Around):
    """Server optimisers (FedAdam's float64 step size) can widen the arrays; the global
    model keeps the dtype it was sent with, so bytes and checkpoints stay comparable."""

    def __init__(self, inner: Strategy):
        super().__init__(inner)
        self._sent: dict = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._sent = {k: v.numpy().dtype for k, v in arrays.items()}
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        from fedsilo.arrays import from_record, to_record

        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        if arrays is not None and any(arrays[k].numpy().dtype != self._sent.get(k)
                                      for k in arrays.keys()):
            arrays = to_record({k: v.astype(self._sent.get(k, v.dtype))
                                for k, v in from_record(arrays).items()})
        return arrays, metrics
