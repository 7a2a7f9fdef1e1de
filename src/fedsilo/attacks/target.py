"""A finished run as the attacks see it: its scenario, its federation rebuilt from that
scenario (the attacker's knowledge of who held which records: only a simulated run's data
is on this machine), a model built fresh with the run's initial weights, and the final
shared weights the federation published."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsilo.arrays import Arrays
from fedsilo.config import ConfigError, Scenario
from fedsilo.data import FederationData
from fedsilo.models.scoped import ScopedModel
from fedsilo.node.silo import SiloRuntime


@dataclass
class Target:
    """A finished run as the attacks see it."""

    scenario: Scenario
    federation: FederationData  # every institution's records, rebuilt from the scenario
    runtime: SiloRuntime  # this process's backbone, device and feature cache
    model: ScopedModel  # the run's model (its arrays are set by each attack)
    initial: Arrays  # the shared weights every run of the scenario starts from
    final: Arrays  # the final shared weights (head.npz)


def load_target(run_dir: Path) -> Target:
    """The finished run in ``run_dir``; one line on what is missing otherwise."""
    from fedsilo import config
    from fedsilo.data import build_federation
    from fedsilo.node.silo import runtime_for

    for name in ("config.toml", "head.npz", "summary.json"):
        if not (run_dir / name).is_file():
            raise ConfigError(f"attack: '{run_dir}' is not a finished run directory (no "
                              f"{name})")
    s = config.load(run_dir / "config.toml")
    fed = build_federation(s)
    rt = runtime_for(s)
    model = rt.model(s.model, len(fed.labels), seed=s.scenario.seed)
    initial = model.get_arrays()  # a fresh process: the weights every run starts from
    with np.load(run_dir / "head.npz") as z:
        final = {k: z[k] for k in z.files}
    return Target(s, fed, rt, model, initial, final)
