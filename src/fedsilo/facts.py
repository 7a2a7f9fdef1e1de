"""What the launcher tells the apps about one run besides the scenario.

The scenario (``fedsilo.config``) is what a user writes and re-runs. A launcher (``fedsilo
run``, ``resume``, ``submit``) also knows facts of this one run: the directory it made, that
it resumes, that the submitter reads the records from the log, and, in a simulation, the
institutions and labels it read from the data (the server reads no data, as in a
deployment) and the cache directory as an absolute path (on a Ray cluster, the same path
on every node's own disk). They travel beside the scenario in Flower's run config, under
``run.*`` keys, and each app reads the two apart once per process (``read``); the user's
scenario is never rewritten to carry them.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

from fedsilo import config
from fedsilo.config import Scenario

PREFIX = "run."


@dataclass(frozen=True)
class RunFacts:
    dir: str = ""  # the run directory the launcher made ('': the ServerApp makes one)
    resume: bool = False  # continue ``dir`` from its last checkpoint
    stream: bool = False  # the ServerApp prints its records for `fedsilo submit`
    institutions: str = ""  # the institutions of the data, comma-separated (simulation)
    labels: str = ""  # the label set found in the data, in label-id order (simulation)
    cache_dir: str = ""  # simulation.cache_dir as an absolute path

    def institution_names(self) -> list[str]:
        return [n for n in self.institutions.split(",") if n]

    def label_names(self) -> list[str]:
        return [n for n in self.labels.split(",") if n]


DEFAULTS: dict[str, Any] = {PREFIX + k: v for k, v in dataclasses.asdict(RunFacts()).items()}


def run_config(s: Scenario, facts: RunFacts) -> dict[str, Any]:
    """Flower's run config for scenario ``s`` and this run's ``facts``."""
    return {**s.flat(), **{PREFIX + k: v for k, v in dataclasses.asdict(facts).items()}}


def read(run_config: dict[str, Any]) -> tuple[Scenario, RunFacts]:
    """(scenario, facts) from an app's run config, built once per process and config."""
    return _read(tuple(sorted(run_config.items())))


@functools.lru_cache(maxsize=8)
def _read(items: tuple[tuple[str, Any], ...]) -> tuple[Scenario, RunFacts]:
    flat = dict(items)
    facts = RunFacts(**{k.removeprefix(PREFIX): flat.pop(k) for k in list(flat)
                        if k.startswith(PREFIX)})
    return config.from_flat(flat), facts


def expected_institutions(s: Scenario, facts: RunFacts) -> tuple[list[str], int | None]:
    """(the names the server waits for, or [] when only their number is known; how many,
    or None when nobody knows)."""
    names = s.federation.names() or facts.institution_names()
    return names, len(names) if names else config.known_institutions(s)


def cache_dir(s: Scenario, facts: RunFacts) -> str:
    return facts.cache_dir or s.simulation.cache_dir
