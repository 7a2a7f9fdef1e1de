"""Deploying for real: one Flower SuperNode per institution, a SuperLink, TLS and
authenticated nodes.

If you look for:
- the certificates and node keys: ``certs.py``;
- the exact Flower command lines (SuperLink, SuperNode, registration): ``commands.py``;
- submitting a run, following it and writing its run directory on the submitting machine:
  ``submit.py``; the lines the ServerApp streams for it: ``stream.py``;
- the long-lived ClientApp process behind ``fedsilo node``: ``worker.py``.
"""
