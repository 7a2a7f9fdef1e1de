"""Institution-level DP at the server (DP-FedAvg) on Flower's DP strategy wrappers.

Flower's client-side wrappers add the Gaussian noise to the mean and adapt the clipping
norm; around them ``CentralDP`` clips (on the server in ``server-*`` modes; the nodes do it
in ``client-*`` modes), keeps the account and stops at the budget. Flower's server-side
wrappers are not used: they divide by each update's norm, which fails on the zero update
of an institution that did not train. Accounting: fedsilo.privacy.central.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp import strategy as fl

from fedsilo import protocol
from fedsilo.arrays import from_record, to_record
from fedsilo.config import CentralDPSection
from fedsilo.privacy.central import CentralAccount, clip_update


class PrivacyBudgetSpent(Exception):
    """The next round would take institution-level DP past privacy.central.max_epsilon."""


class UniformMean:
    """Mixin for FedAvg/FedProx: every institution's arrays weigh the same. Institution-level
    DP needs it: its noise is calibrated to a mean of m clipped updates."""

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        contents = [m.content for m in valid]
        first = from_record(contents[0][self.arrayrecord_key])
        mean = {k: np.mean([c[self.arrayrecord_key][k].numpy() for c in contents], axis=0,
                           dtype=np.float64).astype(first[k].dtype) for k in first}
        return to_record(mean), self.train_metrics_aggr_fn(contents, self.weighted_by_key)


class UniformFedAvg(UniformMean, fl.FedAvg):
    """FedAvg with equal weights."""


class UniformFedProx(UniformMean, fl.FedProx):
    """FedProx with equal weights."""


class AdaptiveClipping(fl.DifferentialPrivacyClientSideAdaptiveClipping):
    """Flower's adaptive-clipping wrapper with Andrew et al.'s norm update.

    The paper moves the norm by C <- C exp(-lr (b - gamma)), where b is the (noisy) share
    of updates left *unclipped* and gamma the target quantile. Flower 1.41 feeds its share
    of *clipped* updates into the same formula, which moves the norm the wrong way (all
    updates clipped -> the norm shrinks further). Here b is the unclipped share again.
    """

    def _geometric_update(self, clipped_fraction: float) -> None:
        unclipped = 1.0 - clipped_fraction
        self.clipping_norm *= math.exp(-self.clip_norm_lr
                                       * (unclipped - self.target_clipped_quantile))


class CentralDP:
    """Mixin over a Flower DP wrapper: the round's account before it runs, server-side
    clipping before the wrapper sees the replies, the epsilon after it is released.
    ``report`` (round -> norm, noise, epsilon) is the run ledger's ``central_dp``."""

    account: CentralAccount
    clip_on_server: bool
    report: dict[int, dict]
    _current: ArrayRecord | None = None

    def checkpoint_state(self) -> tuple[dict, dict]:
        """What a checkpoint keeps: the releases accounted so far (the clipping norm is
        the wrapper's own state, fedsilo.flower_compat.strategy_state)."""
        return {}, {"central_dp_rounds": self.account.rounds}

    def restore_checkpoint_state(self, groups: dict, scalars: dict) -> None:
        if "central_dp_rounds" in scalars:
            self.account.rounds = int(scalars["central_dp_rounds"])

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid):
        if self.account.would_exceed():
            raise PrivacyBudgetSpent(
                f"round {server_round} would take institution-level epsilon to "
                f"{self.account.epsilon_after(self.account.rounds + 1):.3f}, past "
                f"privacy.central.max_epsilon = {self.account.cfg.max_epsilon}")
        self._current = arrays
        self.report[server_round] = {
            "clipping_norm": float(self.clipping_norm),
            "update_noise_multiplier": float(self.noise_multiplier),
            "noise_std": float(self.noise_multiplier * self.clipping_norm
                               / self.num_sampled_clients)}
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        if self.clip_on_server:
            self._clip(replies)
        out = super().aggregate_train(server_round, replies)
        if out[0] is not None:  # a noisy aggregate was released
            self.account.rounds += 1
            self.report[server_round]["epsilon"] = self.account.epsilon_after(
                self.account.rounds)
        return out

    def _clip(self, replies: list[Message]) -> None:
        """Each update clipped to the current norm, with the bit adaptive clipping reads."""
        x = from_record(self._current)
        for msg in replies:
            if msg.has_error():
                continue
            y, bit = clip_update(x, from_record(msg.content[protocol.ARRAYS]),
                                 float(self.clipping_norm))
            msg.content[protocol.ARRAYS] = to_record(y)
            msg.content[protocol.METRICS][protocol.NORM_BIT] = int(bit)


class CentralDPFixed(CentralDP, fl.DifferentialPrivacyClientSideFixedClipping):
    """DP-FedAvg with a fixed clipping norm."""

    def __init__(self, inner, c: CentralDPSection, sampled: int, account: CentralAccount,
                 report: dict[int, dict]):
        super().__init__(inner, c.noise_multiplier, c.clip_norm, sampled)
        self.account, self.report = account, report
        self.clip_on_server = c.mode.startswith("server")


class CentralDPAdaptive(CentralDP, AdaptiveClipping):
    """DP-FedAvg with the clipping norm adapted to a quantile of the update norms."""

    def __init__(self, inner, c: CentralDPSection, sampled: int, account: CentralAccount,
                 report: dict[int, dict]):
        super().__init__(inner, c.noise_multiplier, sampled, initial_clipping_norm=c.clip_norm,
                         target_clipped_quantile=c.target_quantile, clip_norm_lr=c.clip_lr,
                         clipped_count_stddev=c.clipped_count_std or sampled / 20)
        self.account, self.report = account, report
        self.clip_on_server = c.mode.startswith("server")
