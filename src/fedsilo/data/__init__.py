"""Institutions' private data: the synthetic corpus, user files, and partitioning.

If you look for how a scenario becomes per-institution train/test splits, it is
``build_federation`` here; the corpus generator is ``synthetic.py``; file readers are
``loaders.py``; IID and Dirichlet splits are ``partition.py``.
"""

from fedsilo.data.federation import FederationData, InstitutionData, build_federation

__all__ = ["FederationData", "InstitutionData", "build_federation"]
