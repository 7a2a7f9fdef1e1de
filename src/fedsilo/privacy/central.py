"""Institution-level differential privacy at the server (DP-FedAvg) and its accounting.

Each round every sampled institution's update (its trained weights minus the global ones)
is clipped to L2 norm C, on the server (``server-*`` modes) or on the node before it is
sent (``client-*`` modes, the only ones secure aggregation allows). The server averages the
clipped updates with equal weights over the m sampled institutions and adds Gaussian noise
of std z * C / m to the mean, i.e. z * C on the sum: one Gaussian mechanism per round with
noise multiplier z, under add/remove-one-institution adjacency. Flower's DP strategy
wrappers add the noise and adapt the norm; ``clip_update`` here clips (on the server or on
the node), and this module does the accounting.

Accounting assumptions, written next to every number fedsilo reports:
- the unit of privacy is a whole institution (all of its records);
- each round's noisy aggregate is released, so rounds compose;
- Flower samples exactly m of the N institutions without replacement; no amplification by
  sampling is claimed (q = 1 in the accountant), which is valid for any sampling, so the
  epsilon is an upper bound even when m < N;
- adaptive clipping (Andrew et al., 2021) spends part of the same budget on the noisy count
  of unclipped updates: the update noise is raised to z_delta = (z^-2 - (2 sigma_b)^-2)^-1/2
  so that the pair composes to one Gaussian mechanism of multiplier z, which is what is
  accounted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsilo.config import CentralDPSection, ConfigError, Scenario

MECHANISM = {
    "server-fixed": "DP-FedAvg: server-side clipping (fixed norm), Gaussian noise on the mean",
    "client-fixed": "DP-FedAvg: client-side clipping (fixed norm), Gaussian noise on the mean",
    "server-adaptive": "DP-FedAvg: server-side adaptive clipping (Andrew et al.), Gaussian "
                       "noise on the mean",
    "client-adaptive": "DP-FedAvg: client-side adaptive clipping (Andrew et al.), Gaussian "
                       "noise on the mean",
}
ACCOUNTANT = ("RDP of the Gaussian mechanism (Opacus compute_rdp, q = 1), composed over "
              "rounds, integer orders 2-63, 80, 128, 256, 512")
ASSUMPTIONS = ("unit: one institution (add/remove-one); every round's aggregate released; "
               "m of N institutions sampled without replacement, no amplification claimed "
               "(q = 1), an upper bound for any sampling")


def epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """Epsilon at ``delta`` after ``rounds`` Gaussian releases of multiplier z."""
    from fedsilo.privacy.dpsgd import epsilon as sampled_gaussian_epsilon

    return sampled_gaussian_epsilon(noise_multiplier, 1.0, rounds, delta)


def check_budget(s: Scenario) -> None:
    """A ConfigError when ``privacy.central.max_epsilon`` is below one round's epsilon (no
    round could run); checked before anything starts."""
    c = s.privacy.central
    if c.mode == "off" or not c.max_epsilon:
        return
    first = epsilon(c.noise_multiplier, 1, c.delta)
    if first > c.max_epsilon:
        raise ConfigError(f"config: 'privacy.central.max_epsilon' = {c.max_epsilon} is "
                          f"below the epsilon of a single round ({first:.3f}): no round "
                          f"could run")


@dataclass
class CentralAccount:
    """The server's running account of the institution-level guarantee."""

    cfg: CentralDPSection
    sampled: int  # institutions per round (m)
    population: int  # institutions in the federation (N)
    rounds: int = 0  # releases so far

    def epsilon_after(self, rounds: int) -> float:
        return epsilon(self.cfg.noise_multiplier, rounds, self.cfg.delta)

    def would_exceed(self) -> bool:
        budget = self.cfg.max_epsilon
        return budget > 0 and self.epsilon_after(self.rounds + 1) > budget

    def report(self, clip_norm: float, update_noise_multiplier: float,
               clipped_count_std: float | None) -> dict:
        """The server mechanism's row of the privacy report."""
        out = {"mechanism": MECHANISM[self.cfg.mode], "accountant": ACCOUNTANT,
               "assumptions": ASSUMPTIONS, "epsilon": self.epsilon_after(self.rounds),
               "delta": self.cfg.delta, "noise_multiplier": self.cfg.noise_multiplier,
               "update_noise_multiplier": update_noise_multiplier,
               "clipping_norm": clip_norm, "sampled": self.sampled,
               "population": self.population, "sampling_rate": self.sampled / self.population,
               "accounted_sampling_rate": 1.0, "rounds": self.rounds}
        if clipped_count_std is not None:
            out["clipped_count_std"] = clipped_count_std
        return out


def clip_update(x: dict, y: dict, norm: float) -> tuple[dict, bool]:
    """``y`` with its update ``y - x`` scaled to L2 norm at most ``norm`` over all arrays
    (flat clipping, McMahan et al. 2018), and whether it was scaled. A zero update is left
    as it is (an institution that did not train sends one)."""
    update = {k: np.asarray(y[k], dtype=np.float64) - np.asarray(x[k], dtype=np.float64)
              for k in x}
    total = float(np.sqrt(sum(float((u ** 2).sum()) for u in update.values())))
    factor = norm / total if total > norm else 1.0
    out = {k: (np.asarray(x[k], dtype=np.float64) + factor * update[k]).astype(
        np.asarray(y[k]).dtype) for k in x}
    return out, factor < 1.0
