"""What an attacker learns from a finished run (``fedsilo attack``).

These sit above everything they attack: they rebuild the run's federation from its
scenario and train shadow federations outside the client path.

If you look for:
- which attacks a run allows and running them into ``attacks.json``: ``run.py``;
- ROC maths and the loss-threshold membership attack: ``membership.py``;
- LiRA with shadow federations: ``lira.py``;
- label inference by the server from what it held: ``labels.py``;
- canary exposure: ``canary.py``;
- an attack's ROC against the (epsilon, delta) bound: ``audit.py``;
- the tables and plots of the results: ``report.py``.
"""
