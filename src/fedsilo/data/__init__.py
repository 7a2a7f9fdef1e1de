"""Institutions' private data: the synthetic corpus, user files, and partitioning.

If you look for how a scenario becomes per-institution train/test splits, it is
``build_federation`` here; the corpus generator is ``synthetic.py``; file readers are
``loaders.py``; IID and Dirichlet splits are ``partition.py``.
"""

from fedsilo.config import ConfigError, Scenario
from fedsilo.data.federation import FederationData, InstitutionData, build_federation

__all__ = ["FederationData", "InstitutionData", "build_federation", "shared_labels"]


def shared_labels(s: Scenario, found: list[str] | tuple[str, ...] = ()
                  ) -> tuple[str, ...]:
    """The federation's label set without reading data (the server holds none):
    ``data.labels``, or the labels a simulation's launcher ``found`` in the data, or the
    synthetic corpus's labels."""
    if s.data.labels:
        return tuple(s.data.label_names())
    if found:
        return tuple(found)
    if s.data.source == "synthetic":
        from fedsilo.data.roles import task_labels

        return tuple(task_labels(s.data.synthetic.task))
    raise ConfigError("config: 'data.labels' must declare the label set: the server reads "
                      "no data (`fedsilo run` finds it in data.source)")
