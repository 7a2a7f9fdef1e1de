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
from flwr.app import Array, ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp import strategy as fl

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
        first = contents[0][self.arrayrecord_key]
        arrays = ArrayRecord({k: Array(np.ascontiguousarray(np.mean(
            [c[self.arrayrecord_key][k].numpy() for c in contents], axis=0,
            dtype=np.float64).astype(first[k].numpy().dtype))) for k in first.keys()})
        return arrays, self.train_metrics_aggr_fn(contents, self.weighted_by_key)


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
    clipping before the wrapper sees the replies, the epsilon after it is released."""

    account: CentralAccount
    clip_on_server = False  # privacy.central.mode 'server-*'
    _current: ArrayRecord | None = None

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid):
        if self.account.would_exceed():
            raise PrivacyBudgetSpent(
                f"round {server_round} would take institution-level epsilon to "
                f"{self.account.epsilon_after(self.account.rounds + 1):.3f}, past "
                f"privacy.central.max_epsilon = {self.account.cfg.max_epsilon}")
        self._current = arrays
        self.ledger.central_dp[server_round] = {
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
            self.ledger.central_dp[server_round]["epsilon"] = \
                self.account.epsilon_after(self.account.rounds)
        return out

    def _clip(self, replies: list[Message]) -> None:
        """Each update clipped to the current norm, with the bit adaptive clipping reads."""
        x = {k: v.numpy() for k, v in self._current.items()}
        for msg in replies:
            if msg.has_error():
                continue
            rec = msg.content["arrays"]
            y, bit = clip_update(x, {k: rec[k].numpy() for k in rec.keys()},
                                 float(self.clipping_norm))
            msg.content["arrays"] = ArrayRecord({k: Array(np.ascontiguousarray(v))
                                                 for k, v in y.items()})
            msg.content["metrics"]["norm_bit"] = int(bit)


def wrap_central_dp(c: CentralDPSection, inner, sampled: int, track):
    """``inner`` inside Flower's DP wrapper for ``c.mode``, with ``CentralDP`` and the
    bookkeeping mixin (``track``) around it."""
    if c.mode.endswith("fixed"):
        cls = track(type("CentralDPFixed", (CentralDP,
                                            fl.DifferentialPrivacyClientSideFixedClipping), {}))
        strategy = cls(inner, c.noise_multiplier, c.clip_norm, sampled)
    else:
        cls = track(type("CentralDPAdaptive", (CentralDP, AdaptiveClipping), {}))
        strategy = cls(inner, c.noise_multiplier, sampled, initial_clipping_norm=c.clip_norm,
                       target_clipped_quantile=c.target_quantile, clip_norm_lr=c.clip_lr,
                       clipped_count_stddev=c.clipped_count_std or sampled / 20)
    strategy.clip_on_server = c.mode.startswith("server")
    return strategy
