"""``Tracked``: around any strategy, the run's bookkeeping and loud failure.

It wraps a Message-API strategy (Flower's, or one of ours) the way Flower's DP wrappers do:
every call goes to the inner strategy, and on the way it notes who was asked and what came
back (fedsilo's ``RoundLedger``), times each phase, stops the run when an institution
failed, and seeds Flower's sampling. Aggregation itself is left to the inner strategy; what
a checkpoint keeps of it is ``fedsilo.flower_compat.strategy_state``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedsilo import protocol
from fedsilo.flower_compat import restore_strategy_state, strategy_state
from fedsilo.privacy.central import CentralAccount
from strategies.ledger import ClientFailure, RoundLedger, reply_metrics
from strategies.wrapper import Around


class Tracked(Around):
    """``inner`` with bookkeeping in ``ledger``.

    ``tolerates_dropouts``: secure aggregation decides itself who may drop out of training.
    ``skip_below``: ``strategy.on_failure = 'skip'``: a failed institution is left out of
    the round while at least this many replied (None: any failure stops the run).
    ``account``: the institution-level DP account, for the privacy report.
    """

    def __init__(self, inner: Strategy, ledger: RoundLedger, *,
                 tolerates_dropouts: bool = False, skip_below: int | None = None,
                 account: CentralAccount | None = None, seed: int = 0):
        super().__init__(inner)
        self.ledger = ledger
        self.seed = seed
        self.tolerates_dropouts = tolerates_dropouts
        self.skip_below = skip_below
        self.account = account
        self._t_aggregate = 0.0

    # -- sending ---------------------------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._seed_sampling(server_round, "training")
        msgs = self.inner.configure_train(server_round, arrays, config, grid)
        return self._sending(server_round, "training", msgs)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid, riding: Iterable[int] = ()) -> Iterable[Message]:
        """``riding``: the nodes whose evaluation will ride on a training message (no
        arrays go down for it)."""
        self._seed_sampling(server_round, "evaluation")
        msgs = self.inner.configure_evaluate(server_round, arrays, config, grid)
        return self._sending(server_round, "evaluation", msgs, frozenset(riding))

    def _seed_sampling(self, server_round: int, stage: str) -> None:
        """Flower samples institutions with Python's global ``random``, which other
        threads of the process (Ray's) also draw from: seed it right before each sample,
        from the scenario's seed, the round and the stage, so the same institutions are
        sampled in every run, resumed or not."""
        random.seed(f"{self.seed}:{server_round}:{stage}")

    def _sending(self, server_round: int, stage: str, msgs: Iterable[Message],
                 riding: frozenset[int] = frozenset()) -> list[Message]:
        msgs = list(msgs)
        self.ledger.sending(server_round, stage, msgs, riding)
        self.ledger.phase_start[(server_round, stage)] = time.perf_counter()
        return msgs

    # -- receiving -------------------------------------------------------------------------
    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = self._received(server_round, "training", replies)
        answered = [m for m in replies if not m.has_error()]
        if answered and all(int(reply_metrics(m)[protocol.NUM_EXAMPLES]) == 0
                            for m in answered):
            raise ClientFailure(f"no institution trained in round {server_round}: every "
                                f"sampled institution has spent its privacy budget "
                                f"(privacy.max_epsilon)")
        out = self.inner.aggregate_train(server_round, replies)
        self._aggregated(server_round, "training")
        return out

    def stop_if_training_failed(self, server_round: int, replies: list[Message]) -> None:
        """With ``strategy.on_failure = 'stop'``: ClientFailure naming who failed training
        round ``server_round``, before anything of the round is recorded (a failed message
        that also carried an evaluation is a training failure first)."""
        if self.skip_below is None and not self.tolerates_dropouts:
            self.ledger.check(server_round, "training", self.ledger.in_order(list(replies)))

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        replies = self._received(server_round, "evaluation", replies)
        out = self.inner.aggregate_evaluate(server_round, replies)
        self._aggregated(server_round, "evaluation")
        return out

    def _received(self, server_round: int, stage: str, replies: Iterable[Message]
                  ) -> list[Message]:
        """Check and record a stage's replies; ClientFailure if an institution failed."""
        self._t_aggregate = time.perf_counter()
        start = self.ledger.phase_start.get((server_round, stage), self._t_aggregate)
        self.ledger.timing.setdefault(server_round, {})[f"{stage}_phase_s"] = \
            self._t_aggregate - start
        replies = self.ledger.check(server_round, stage, self.ledger.in_order(list(replies)),
                                    tolerate=stage == "training" and self.tolerates_dropouts,
                                    skip_below=self.skip_below)
        self.ledger.record(server_round, stage, replies)
        return replies

    def _aggregated(self, server_round: int, stage: str) -> None:
        self.ledger.timing[server_round][f"{stage}_aggregate_s"] = \
            time.perf_counter() - self._t_aggregate

    # -- what a checkpoint keeps, and a resumed run gets back ---------------------------------
    def state(self) -> dict[str, np.ndarray]:
        """The server-side state a resume needs, as named arrays: FedAdam/FedYogi/FedAdagrad
        moments, FedAvgM's momentum and its own copy of the weights, SCAFFOLD's control
        variate (empty for stateless strategies)."""
        return strategy_state(self.inner)[0]

    def scalars(self) -> dict:
        """The rest of the state, as JSON: institution-level DP's releases and norm."""
        return strategy_state(self.inner)[1]

    def restore(self, arrays: dict[str, np.ndarray], scalars: dict) -> None:
        restore_strategy_state(self.inner, arrays, scalars)
