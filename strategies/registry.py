"""From the scenario to the strategy that runs it: which class, with which arguments.

``build_strategy`` returns a ``Tracked`` strategy around, by ``strategy.name``, one of
Flower's Message-API strategies or our SCAFFOLD; with ``privacy.secagg.enabled`` the
training replies are summed under SecAgg+, and with ``privacy.central.mode`` the mean is
made institution-level DP by one of Flower's DP wrappers (strategies/central_dp.py).
From the outside in:

    Tracked -> [ServerView] -> [RecordsSelection] -> KeepsDtypes -> [CentralDP*] -> strategy

(the server's view sees each reply as it arrived, before the server's own clipping).
"""

from __future__ import annotations

from flwr.serverapp import strategy as fl

from fedsilo.config import Scenario, sampled_per_round
from fedsilo.privacy.central import CentralAccount
from fedsilo.protocol import NUM_EXAMPLES
from strategies.central_dp import CentralDPAdaptive, CentralDPFixed, UniformFedAvg, UniformFedProx
from strategies.evaluation import aggregate_evaluate_metrics
from strategies.krum import RecordsSelection
from strategies.ledger import RoundLedger
from strategies.scaffold import Scaffold
from strategies.secagg import SecAggFedAvg, SecAggFedProx
from strategies.tracked import Tracked
from strategies.view import ServerView
from strategies.wrapper import KeepsDtypes

STRATEGIES: dict[str, type] = {
    "fedavg": fl.FedAvg, "fedprox": fl.FedProx, "fedavgm": fl.FedAvgM,
    "fedadam": fl.FedAdam, "fedyogi": fl.FedYogi, "fedadagrad": fl.FedAdagrad,
    "fedmedian": fl.FedMedian, "fedtrimmedavg": fl.FedTrimmedAvg, "krum": fl.Krum,
    "multikrum": fl.MultiKrum, "scaffold": Scaffold,
}
SECURE = {"fedavg": SecAggFedAvg, "fedprox": SecAggFedProx}  # summed under SecAgg+
UNIFORM = {"fedavg": UniformFedAvg, "fedprox": UniformFedProx}  # equal weights


def strategy_params(s: Scenario) -> dict:
    """The strategy-specific constructor arguments from ``strategy.*``."""
    st = s.strategy
    adaptive = {"eta": st.eta, "eta_l": s.train.lr, "tau": st.tau}
    return {
        "fedprox": {"proximal_mu": st.proximal_mu},
        "fedavgm": {"server_learning_rate": st.server_lr,
                    "server_momentum": st.server_momentum},
        "fedadam": {**adaptive, "beta_1": st.beta_1, "beta_2": st.beta_2},
        "fedyogi": {**adaptive, "beta_1": st.beta_1, "beta_2": st.beta_2},
        "fedadagrad": adaptive,
        "fedtrimmedavg": {"beta": st.trim_beta},
        "krum": {"num_malicious_nodes": st.num_malicious},
        "multikrum": {"num_malicious_nodes": st.num_malicious,
                      "num_nodes_to_select": st.krum_select},
        "scaffold": {"server_lr": st.server_lr},
    }.get(st.name, {})


def build_strategy(s: Scenario, ledger: RoundLedger, num_nodes: int,
                   max_weight: float = 1.0) -> Tracked:
    """The scenario's strategy, sampling institutions as ``strategy.*`` says, with secure
    aggregation and institution-level DP around it when ``privacy.*`` asks for them."""
    st, central, sa = s.strategy, s.privacy.central, s.privacy.secagg
    min_train = min(st.min_train_clients, num_nodes)
    args = dict(fraction_train=st.fraction_train, fraction_evaluate=st.fraction_evaluate,
                min_train_nodes=min_train, min_evaluate_nodes=min(min_train, num_nodes),
                min_available_nodes=num_nodes, weighted_by_key=NUM_EXAMPLES,
                evaluate_metrics_aggr_fn=aggregate_evaluate_metrics, **strategy_params(s))
    dp = central.mode != "off"
    if sa.enabled:  # the server only ever sees the sum of the masked updates
        names = {n: i["institution"] for n, i in ledger.roster.items()}
        inner = SECURE[st.name](secagg=sa, max_weight=1.0 if dp else max_weight,
                                timeout=st.round_timeout_s, names=names,
                                report=ledger.secagg, **args)
    elif dp:
        inner = UNIFORM[st.name](**args)
    else:
        inner = STRATEGIES[st.name](**args)
    account = None
    if dp:
        sampled = sampled_per_round(s, num_nodes)
        account = CentralAccount(central, sampled, num_nodes)
        wrapper = CentralDPFixed if central.mode.endswith("fixed") else CentralDPAdaptive
        inner = wrapper(inner, central, sampled, account, ledger.central_dp)
    inner = KeepsDtypes(inner)
    if st.name in ("krum", "multikrum"):
        inner = RecordsSelection(inner, ledger)
    if s.attack.server_view:
        inner = ServerView(inner, ledger)
    skip = st.min_replies if st.on_failure == "skip" and not dp else None
    # secure aggregation alone tolerates dropouts as far as its threshold allows
    return Tracked(inner, ledger, tolerates_dropouts=sa.enabled and not dp, skip_below=skip,
                   account=account, seed=s.scenario.seed)
