"""Where aggregation happens.

If you look for:
- how a scenario becomes a strategy: ``registry.build_strategy``;
- the bookkeeping around every strategy (who was asked, who replied, bytes, timing, loud
  failure): ``tracked.Tracked`` and ``ledger.RoundLedger``;
- federation-wide metrics from the confusion matrices: ``evaluation.py``;
- SCAFFOLD (Flower has none): ``scaffold.py``;
- institution-level DP (DP-FedAvg on Flower's wrappers): ``central_dp.py``;
- the server's side of secure aggregation (SecAgg+): ``secagg.py``.
"""

from strategies.evaluation import aggregate_evaluate_metrics
from strategies.ledger import ClientFailure, RoundLedger, short_reason
from strategies.registry import build_strategy
from strategies.tracked import Tracked

__all__ = ["ClientFailure", "RoundLedger", "Tracked", "aggregate_evaluate_metrics",
           "build_strategy", "short_reason"]
