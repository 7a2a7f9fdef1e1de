"""Privacy: what may leave an institution (``boundary.py``), record-level DP-SGD with its
accountant (``dpsgd.py``), institution-level DP at the server and its account
(``central.py``)."""

from __future__ import annotations

from fedsilo.config import Scenario


def check_scenario(s: Scenario) -> None:
    """The privacy settings that need an accountant to validate (config.py checks the
    rest); a ConfigError naming the field. Called before a run starts."""
    from fedsilo.privacy.central import check_budget

    check_budget(s)
