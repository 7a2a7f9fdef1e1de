"""The scenario: one typed, validated object built from TOML files and overrides.

Every knob has exactly one default, here. A scenario file in configs/ holds only what
differs. The same flat ``section.key`` form is what Flower's ``--run-config`` and
``[tool.flwr.app.config]`` use, so ``fedsilo run configs/x.toml`` and
``flwr run . --run-config configs/x.toml`` read the same file.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A bad scenario: the message names the field or file and what is wrong."""


def _opt(default: Any, help: str, choices: tuple | None = None, low: float | None = None,
         high: float | None = None, low_open: bool = False) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices, "low": low,
                                            "high": high, "low_open": low_open})


@dataclass(frozen=True)
class ScenarioSection:
    name: str = _opt("bank_hospital", "name of the scenario; prefix of the run directory")
    seed: int = _opt(42, "seed for data generation, partitioning, head init and training",
                     low=0)
    rounds: int = _opt(20, "number of federated rounds (at most, with target_accuracy)",
                       low=1)
    target_accuracy: float = _opt(0.0, "stop after the first round whose global accuracy "
                                  "reaches this (0 = run every round)", low=0, high=1)


@dataclass(frozen=True)
class FederationSection:
    banks: int = _opt(3, "number of bank institutions (synthetic data, iid/dirichlet splits)",
                      low=0)
    hospitals: int = _opt(2, "number of hospital institutions", low=0)
    institutions: str = _opt("", "comma-separated names of the institutions the server waits "
                             "for and trains with (empty: those of the scenario's data; "
                             "`fedsilo run` fills it in; a deployment must name them)")
    wait_s: float = _opt(120.0, "seconds the server waits for the nodes of every expected "
                         "institution before it stops and names the missing ones", low=0,
                         low_open=True)

    def names(self) -> list[str]:
        """``institutions`` as a list (empty when not given)."""
        return _split(self.institutions)


@dataclass(frozen=True)
class SyntheticSection:
    task: str = _opt("intents", "'intents': what a message is about (8 labels; a linear head "
                     "on frozen features does well); 'roles': who did what to whom and "
                     "whether it happened (4 labels; word order, passives and negation: "
                     "encoder weights must train, configs/hard.toml)",
                     choices=("intents", "roles"))
    size: int = _opt(360, "mean number of messages per institution", low=20)
    size_spread: float = _opt(0.5, "log-normal spread of institution sizes (0 = equal)", low=0)
    label_noise: float = _opt(0.04, "share of messages whose label is replaced at random",
                              low=0, high=0.5)
    typo_rate: float = _opt(0.06, "probability that a word gets a typo", low=0, high=0.5)
    kind_skew: float = _opt(0.8, "share of an institution's messages drawn from the labels "
                            "typical of its kind", low=0, high=1)


@dataclass(frozen=True)
class DataSection:
    source: str = _opt("synthetic", "'synthetic', or a CSV/JSONL/Parquet file or a saved "
                       "Hugging Face dataset directory (simulation; in a deployment each "
                       "node names its own file)")
    labels: str = _opt("", "comma-separated label set, in label-id order (empty: the labels "
                       "found in the data; a deployment must declare it, and every node's "
                       "file is checked against it)")
    text_column: str = _opt("text", "column holding the text")
    label_column: str = _opt("label", "column holding the label")
    institution_column: str = _opt("institution", "column naming the institution "
                                   "(used by partition = 'natural')")
    kind_column: str = _opt("kind", "optional column with 'bank' or 'hospital'")
    partition: str = _opt("natural", "how data is split over institutions",
                          choices=("natural", "iid", "dirichlet"))
    alpha: float = _opt(0.5, "Dirichlet concentration over labels (partition = 'dirichlet')",
                        low=0, low_open=True)
    test_fraction: float = _opt(0.2, "share of each institution's data kept as its test split",
                                low=0, high=0.9, low_open=True)
    min_examples: int = _opt(8, "fewest training examples an institution may hold", low=1)
    synthetic: SyntheticSection = field(default_factory=SyntheticSection)

    def label_names(self) -> list[str]:
        """``labels`` as a list (empty when not declared)."""
        return _split(self.labels)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@dataclass(frozen=True)
class ModelSection:
    backbone: str = _opt("minilm", "'minilm' (offline MiniLM), 'tiny' (a small BERT built "
                         "locally), a local directory, or a hub id")
    max_length: int = _opt(64, "tokens per text", low=8, high=512)
    pooling: str = _opt("mean", "how token states become one vector", choices=("mean", "cls"))
    scope: str = _opt("head", "what trains and travels: the head only, the last top_k "
                      "layers too, LoRA adapters too, or everything",
                      choices=("head", "top-k", "lora", "full"))
    top_k: int = _opt(2, "encoder layers that train with scope 'top-k'", low=1)
    lora_r: int = _opt(8, "LoRA rank (scope 'lora')", low=1)
    lora_alpha: float = _opt(16.0, "LoRA scaling alpha", low=0, low_open=True)
    lora_dropout: float = _opt(0.05, "dropout on the LoRA path", low=0, high=0.9)
    lora_targets: str = _opt("query,value", "comma-separated module names that get adapters")
    head_hidden: int = _opt(0, "hidden units of the head (0 = a linear head)", low=0)
    dropout: float = _opt(0.1, "dropout before the head", low=0, high=0.9)
    cache: bool = _opt(True, "run each institution's texts through the frozen part of the "
                       "backbone once and train later rounds from the cached outputs "
                       "(scopes 'head' and 'top-k')")
    cache_max_mb: int = _opt(1024, "memory bound of the in-process cache (MB)", low=1)


@dataclass(frozen=True)
class TrainSection:
    local_epochs: int = _opt(2, "passes over the local data per round", low=1)
    batch_size: int = _opt(32, "examples per step", low=1)
    lr: float = _opt(0.003, "learning rate of the classification head (every trainable "
                     "weight with scope head)", low=0, low_open=True)
    encoder_lr: float = _opt(0.0002, "learning rate of trainable encoder layers (scopes top-k "
                             "and full)", low=0, low_open=True)
    adapter_lr: float = _opt(0.001, "learning rate of the LoRA adapters (scope lora)", low=0,
                             low_open=True)
    warmup: float = _opt(0.1, "share of each round's local steps over which the encoder and "
                         "adapter learning rates rise linearly from 0 (the head's is constant)",
                         low=0, high=1)
    early_stopping: str = _opt("encoder", "hold out train.validation_share of each "
                               "institution's training rows and keep the local epoch with the "
                               "lowest validation loss, the received weights included: "
                               "'encoder' for scopes top-k, lora and full; 'always'; 'off' (not "
                               "with DP-SGD or SCAFFOLD)", choices=("encoder", "always", "off"))
    validation_share: float = _opt(0.1, "share of each institution's training rows held out "
                                   "for early stopping (never its test rows)", low=0, high=0.5,
                                   low_open=True)
    optimizer: str = _opt("adamw", "local optimiser", choices=("adamw", "sgd"))
    weight_decay: float = _opt(0.0, "weight decay", low=0)

    def stops_early(self, scope: str) -> bool:
        """Whether plain local training of ``scope`` holds out a validation split."""
        return self.early_stopping == "always" or (self.early_stopping == "encoder"
                                                   and scope != "head")


@dataclass(frozen=True)
class StrategySection:
    name: str = _opt("fedavg", "aggregation strategy (docs/strategies.md)",
                     choices=("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi",
                              "fedadagrad", "fedmedian", "fedtrimmedavg", "krum",
                              "multikrum", "scaffold"))
    proximal_mu: float = _opt(0.01, "FedProx: weight mu of mu/2 * ||w - w_global||^2", low=0)
    server_lr: float = _opt(1.0, "FedAvgM and SCAFFOLD: server learning rate", low=0,
                            low_open=True)
    server_momentum: float = _opt(0.9, "FedAvgM: server momentum", low=0, high=1)
    eta: float = _opt(0.01, "FedAdam/FedYogi/FedAdagrad: server learning rate", low=0,
                      low_open=True)
    tau: float = _opt(0.001, "FedAdam/FedYogi/FedAdagrad: adaptivity", low=0, low_open=True)
    beta_1: float = _opt(0.9, "FedAdam/FedYogi: first-moment decay", low=0, high=1)
    beta_2: float = _opt(0.99, "FedAdam/FedYogi: second-moment decay", low=0, high=1)
    trim_beta: float = _opt(0.2, "FedTrimmedAvg: share cut from each end", low=0, high=0.49)
    num_malicious: int = _opt(1, "Krum/MultiKrum: malicious institutions assumed", low=0)
    krum_select: int = _opt(3, "MultiKrum: updates kept and averaged", low=1)
    fraction_train: float = _opt(1.0, "share of institutions sampled for training per round",
                                 low=0, high=1, low_open=True)
    fraction_evaluate: float = _opt(1.0, "share of institutions sampled for evaluation",
                                    low=0, high=1, low_open=True)
    min_train_clients: int = _opt(2, "fewest institutions sampled for training per round",
                                  low=1)
    round_timeout_s: float = _opt(900.0, "seconds to wait for replies in a round", low=1)
    on_failure: str = _opt("stop", "when an institution fails or does not reply in a round: "
                           "'stop' the run naming it, or 'skip' it for that round",
                           choices=("stop", "skip"))
    min_replies: int = _opt(2, "with on_failure = 'skip': fewest replies a round needs to go "
                            "on (below it the run stops naming who failed)", low=1)
    evaluation: str = _opt("with-training", "'with-training': the message that trains round "
                           "r also evaluates round r-1's global model (one message per "
                           "institution per round, a last evaluation after the final round); "
                           "'separate': an evaluate message after each round's training "
                           "(always, with SecAgg+ or scenario.target_accuracy)",
                           choices=("with-training", "separate"))


@dataclass(frozen=True)
class SimulationSection:
    device: str = _opt("auto", "where clients train", choices=("auto", "cpu", "cuda"))
    cpus_per_client: float = _opt(1.0, "CPUs reserved by each Ray actor", low=0,
                                  low_open=True)
    gpus_per_client: float = _opt(0.25, "GPU share of each Ray actor when on CUDA", low=0,
                                  high=1, low_open=True)
    num_cpus: int = _opt(0, "CPUs Ray may use (0 = all; a private instance only)", low=0)
    ray_address: str = _opt("", "'' starts a private Ray instance for the run (whatever "
                            "RAY_ADDRESS says); 'auto' or HOST:PORT runs on that existing "
                            "Ray cluster (docs/ray-cluster.md)")
    cache_dir: str = _opt(".fedsilo-cache", "scratch for Ray, Flower, Hugging Face, built "
                          "models and feature caches")


@dataclass(frozen=True)
class OutputSection:
    dir: str = _opt("runs", "where run directories are created")
    plot: bool = _opt(True, "write PNG plots")
    audit: bool = _opt(False, "record every reply each institution sends (records, metric "
                       "values, array shapes) in <run dir>/audit/<institution>.jsonl (a "
                       "deployed node: <its cache dir>/audit/)")
    tensorboard: bool = _opt(True, "write TensorBoard event files as rounds end: <run dir>/"
                             "tb/server/ (the federation) and tb/<institution>/ (docs/"
                             "tracking.md)")
    mlflow: bool = _opt(False, "log the finished run to MLflow: a run with the config as "
                        "parameters, a child run per institution, the run directory as "
                        "artifacts")
    mlflow_uri: str = _opt("", "MLflow tracking URI (empty: a local SQLite file "
                           "<output.dir>/mlflow.db)")
    mlflow_experiment: str = _opt("", "MLflow experiment (empty: the scenario's name)")


@dataclass(frozen=True)
class CentralDPSection:
    mode: str = _opt("off", "institution-level DP at the server (DP-FedAvg): where each "
                     "update is clipped, and whether the clipping norm adapts",
                     choices=("off", "server-fixed", "client-fixed", "server-adaptive",
                              "client-adaptive"))
    noise_multiplier: float = _opt(1.0, "noise std on the sum of clipped updates, over the "
                                   "clipping norm", low=0, low_open=True)
    clip_norm: float = _opt(1.0, "L2 bound on each institution's update (the initial bound "
                            "with adaptive clipping)", low=0, low_open=True)
    delta: float = _opt(1e-5, "delta of the institution-level guarantee", low=0, high=1,
                        low_open=True)
    target_quantile: float = _opt(0.5, "adaptive clipping: the quantile of update norms the "
                                  "clipping norm tracks", low=0, high=1)
    clip_lr: float = _opt(0.2, "adaptive clipping: learning rate of the geometric norm update",
                          low=0, low_open=True)
    clipped_count_std: float = _opt(0.0, "adaptive clipping: noise std on the count of "
                                    "unclipped updates (0 = institutions per round / 20)",
                                    low=0)
    max_epsilon: float = _opt(0.0, "stop the run before a round that would exceed this "
                              "epsilon (0 = no budget)", low=0)


@dataclass(frozen=True)
class SecAggSection:
    enabled: bool = _opt(False, "secure aggregation (SecAgg+): the server learns only the "
                         "sum of the institutions' updates")
    shares: float = _opt(1.0, "shares of each institution's secrets: an integer >= 3, or a "
                         "fraction (<= 1) of the institutions in the round", low=0,
                         low_open=True)
    threshold: float = _opt(0.6, "shares needed to rebuild a secret: an integer >= 2, or a "
                            "fraction (<= 1) of the shares", low=0, low_open=True)
    clip_range: float = _opt(4.0, "updates are clipped to [-clip_range, clip_range] per "
                             "coordinate before quantisation", low=0, low_open=True)
    quantization_bits: int = _opt(22, "each coordinate is quantised to this many bits "
                                  "(sums stay below 2^32)", low=4, high=30)


@dataclass(frozen=True)
class PrivacySection:
    dp: bool = _opt(False, "record-level DP-SGD inside each institution (docs/privacy.md)")
    noise_multiplier: float = _opt(1.0, "DP-SGD: noise std over max_grad_norm", low=0,
                                   low_open=True)
    target_epsilon: float = _opt(0.0, "DP-SGD: derive the noise multiplier so that each "
                                 "institution ends at this epsilon (0 = use "
                                 "noise_multiplier)", low=0)
    max_grad_norm: float = _opt(1.0, "DP-SGD: per-example clipping norm", low=0,
                                low_open=True)
    delta: float = _opt(0.0, "DP-SGD: delta per institution (0 = 1/(10 n) for its n "
                        "training examples)", low=0, high=1)
    max_epsilon: float = _opt(0.0, "DP-SGD: an institution whose next round would exceed "
                              "this epsilon stops training (0 = no budget)", low=0)
    central: CentralDPSection = field(default_factory=CentralDPSection)
    secagg: SecAggSection = field(default_factory=SecAggSection)


@dataclass(frozen=True)
class FaultsSection:
    crash: str = _opt("", "comma-separated institutions whose client raises in training "
                      "(fault injection)")
    crash_from_round: int = _opt(1, "first round in which those clients raise", low=1)
    malicious: str = _opt("", "comma-separated institutions that attack with 'behaviour'")
    behaviour: str = _opt("scale", "what malicious institutions do",
                          choices=("label_flip", "sign_flip", "scale", "noise",
                                   "label_flip_scale"))
    scale: float = _opt(100.0, "factor on the update for behaviours 'scale' and "
                        "'label_flip_scale'")
    noise_std: float = _opt(1.0, "std of the update for behaviour 'noise'", low=0)

    def crashing(self) -> set[str]:
        return {n.strip() for n in self.crash.split(",") if n.strip()}

    def attackers(self) -> set[str]:
        return {n.strip() for n in self.malicious.split(",") if n.strip()}


@dataclass(frozen=True)
class PersonalizeSection:
    method: str = _opt("none", "each institution's own model beside the shared one: 'none'; "
                       "'finetune': the final shared model trained further on the "
                       "institution's own data; 'ditto': a personal model trained every "
                       "round, pulled towards the shared one; 'split': a shared body and a "
                       "private output layer that never leaves the institution "
                       "(docs/personalization.md)",
                       choices=("none", "finetune", "ditto", "split"))
    epochs: int = _opt(2, "local epochs of personal training (finetune: once, after the "
                       "last round; ditto: every round)", low=1)
    lam: float = _opt(0.003, "ditto: weight lambda of lambda/2 * ||v - w_shared||^2 that pulls "
                      "the personal model v towards the shared one", low=0)
    compare_local: bool = _opt(True, "after a simulated run that personalises: train each "
                               "institution alone as well (the local-only baseline) and print "
                               "what each one gains against it")


@dataclass(frozen=True)
class AttackSection:
    server_view: bool = _opt(False, "keep what the server holds of the output layer each "
                             "round (every reply's change, or under SecAgg+ only the "
                             "aggregate's) in the metrics rows, for the label-inference "
                             "attack (docs/privacy-attacks.md)")
    shadows: int = _opt(16, "LiRA: shadow federations, each trained on a random half of "
                        "every institution's records (16 for a real measurement)", low=2)
    canaries: int = _opt(0, "canary records (random text, random label) inserted into "
                         "one institution's training data, for the exposure measurement",
                         low=0)
    canary_institution: str = _opt("", "the institution that holds the canaries (empty: "
                                   "the first one)")
    canary_references: int = _opt(1000, "fresh reference canaries each canary is ranked "
                                  "among (exposure = log2 R - log2 rank)", low=10)


@dataclass(frozen=True)
class Scenario:
    scenario: ScenarioSection = field(default_factory=ScenarioSection)
    federation: FederationSection = field(default_factory=FederationSection)
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)
    strategy: StrategySection = field(default_factory=StrategySection)
    simulation: SimulationSection = field(default_factory=SimulationSection)
    output: OutputSection = field(default_factory=OutputSection)
    privacy: PrivacySection = field(default_factory=PrivacySection)
    faults: FaultsSection = field(default_factory=FaultsSection)
    personalize: PersonalizeSection = field(default_factory=PersonalizeSection)
    attack: AttackSection = field(default_factory=AttackSection)

    # -- views -------------------------------------------------------------------------
    def flat(self) -> dict[str, Any]:
        """The flat ``section.key -> value`` form (Flower's run config)."""
        return flatten(dataclasses.asdict(self))

    def replace(self, **flat_overrides: Any) -> Scenario:
        """A copy with some flat keys changed, validated again."""
        merged = self.flat()
        merged.update(flat_overrides)
        return from_flat(merged)


# -- flat <-> nested ------------------------------------------------------------------------
def flatten(nested: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _fields(cls: type, prefix: str = "") -> dict[str, dataclasses.Field]:
    out: dict[str, dataclasses.Field] = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default_factory if f.default_factory is not
                                    dataclasses.MISSING else None):
            out.update(_fields(f.default_factory, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = f
    return out


FIELDS: dict[str, dataclasses.Field] = _fields(Scenario)
DEFAULTS: dict[str, Any] = Scenario().flat()


def _type_name(t: type) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}[t]


def _check_value(key: str, value: Any) -> Any:
    f = FIELDS[key]
    want = type(DEFAULTS[key])
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if want is not bool and isinstance(value, bool) or not isinstance(value, want):
        raise ConfigError(f"config: '{key}' must be {_type_name(want)}, got "
                          f"{type(value).__name__} {value!r}")
    if want is float and not math.isfinite(value):
        raise ConfigError(f"config: '{key}' must be a finite number, got {value!r}")
    meta = f.metadata
    if meta.get("choices") and value not in meta["choices"]:
        opts = ", ".join(repr(c) for c in meta["choices"])
        raise ConfigError(f"config: '{key}' must be one of {opts}, got {value!r}")
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value <= low if meta.get("low_open") else value < low):
        sign = ">" if meta.get("low_open") else ">="
        raise ConfigError(f"config: '{key}' must be {sign} {low}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"config: '{key}' must be <= {high}, got {value!r}")
    return value


def _unknown(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, FIELDS, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"config: unknown key '{key}'{hint}")


def from_flat(flat: dict[str, Any]) -> Scenario:
    """Build and validate a scenario from flat keys; missing keys take their defaults."""
    values = dict(DEFAULTS)
    for key, value in flat.items():
        if key not in FIELDS:
            raise _unknown(key)
        values[key] = _check_value(key, value)
    nested: dict[str, Any] = {}
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    scenario = _build(Scenario, nested)
    _check_whole(scenario)
    return scenario


def _build(cls: type, nested: dict[str, Any]) -> Any:
    kwargs = {}
    for f in dataclasses.fields(cls):
        value = nested[f.name]
        if isinstance(value, dict):
            value = _build(f.default_factory, value)
        kwargs[f.name] = value
    return cls(**kwargs)


def _check_whole(s: Scenario) -> None:
    """Rules that involve more than one field."""
    for key, names in (("federation.institutions", s.federation.names()),
                       ("data.labels", s.data.label_names())):
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ConfigError(f"config: '{key}' names {twice[0]!r} more than once")
    if s.data.labels and len(s.data.label_names()) < 2:
        raise ConfigError("config: 'data.labels' must declare at least 2 labels")
    if s.data.source == "synthetic" or s.data.partition != "natural":
        if s.federation.banks + s.federation.hospitals < 1:
            raise ConfigError("config: 'federation.banks' + 'federation.hospitals' must be "
                              "at least 1")
    if s.strategy.name == "scaffold" and s.train.optimizer != "sgd":
        raise ConfigError("config: 'strategy.name' = 'scaffold' needs 'train.optimizer' = "
                          "'sgd' (its control variates assume plain SGD steps)")
    _check_privacy(s)
    if s.personalize.method == "split" and s.model.scope == "head" and \
            s.model.head_hidden == 0:
        raise ConfigError("config: 'personalize.method' = 'split' keeps the output layer "
                          "private, so something else must be shared: set "
                          "'model.head_hidden' > 0 or 'model.scope' to top-k, lora or full")
    if s.personalize.method == "split" and s.strategy.name == "scaffold":
        raise ConfigError("config: 'personalize.method' = 'split' cannot be used with "
                          "'strategy.name' = 'scaffold' (its control variates cover every "
                          "trained weight, the private layer included)")
    if s.personalize.method == "finetune" and s.privacy.dp:
        raise ConfigError("config: 'personalize.method' = 'finetune' cannot be used with "
                          "'privacy.dp' yet: its fine-tuning after the last round would read "
                          "private records outside DP-SGD's accounting ('ditto' and "
                          "'split' are accounted)")
    if not s.scenario.name.strip() or any(c in s.scenario.name for c in "/\\ "):
        raise ConfigError(f"config: 'scenario.name' must be a non-empty name without "
                          f"spaces or slashes, got {s.scenario.name!r}")


AVERAGING = ("fedavg", "fedprox")  # strategies whose aggregate is a plain mean


def _check_privacy(s: Scenario) -> None:
    central, sa = s.privacy.central, s.privacy.secagg
    if central.mode != "off" and s.strategy.on_failure == "skip":
        raise ConfigError("config: 'strategy.on_failure' = 'skip' cannot be used with "
                          "'privacy.central.mode': the noise is calibrated to every sampled "
                          "institution replying")
    if central.mode != "off" and s.strategy.name not in AVERAGING:
        raise ConfigError(f"config: 'privacy.central.mode' = '{central.mode}' needs "
                          f"'strategy.name' = 'fedavg' or 'fedprox' (its noise is "
                          f"calibrated to a plain mean), got '{s.strategy.name}'")
    if central.mode.endswith("adaptive") and (n := known_institutions(s)):
        m = sampled_per_round(s, n)
        count_std = central.clipped_count_std or m / 20
        if central.noise_multiplier >= 2 * count_std:
            raise ConfigError(
                f"config: adaptive clipping needs 'privacy.central.noise_multiplier' "
                f"({central.noise_multiplier:g}) below twice "
                f"'privacy.central.clipped_count_std' ({count_std:g} with {m} institutions "
                f"per round): raise clipped_count_std above "
                f"{central.noise_multiplier / 2:g}")
    if not sa.enabled:
        return
    if s.strategy.name not in AVERAGING:
        raise ConfigError(f"config: 'privacy.secagg.enabled' needs 'strategy.name' = "
                          f"'fedavg' or 'fedprox' (the server learns only the sum), got "
                          f"'{s.strategy.name}'")
    if central.mode.startswith("server"):
        raise ConfigError(f"config: 'privacy.secagg.enabled' needs client-side clipping: "
                          f"set 'privacy.central.mode' to '"
                          f"{central.mode.replace('server', 'client')}' (the server never "
                          f"sees an individual update to clip)")
    for key, value, least in (("shares", sa.shares, 3), ("threshold", sa.threshold, 2)):
        if value > 1 and (value != int(value) or value < least):
            raise ConfigError(f"config: 'privacy.secagg.{key}' must be a fraction <= 1 or "
                              f"an integer >= {least}, got {value!r}")
    if sa.shares > 1 and sa.threshold > 1 and sa.threshold >= sa.shares:
        raise ConfigError(f"config: 'privacy.secagg.threshold' ({sa.threshold:g}) must be "
                          f"below 'privacy.secagg.shares' ({sa.shares:g})")
    if expected := known_institutions(s):
        if expected < 2:
            raise ConfigError("config: 'privacy.secagg.enabled' needs at least 2 "
                              "institutions")
        if expected * 2 ** sa.quantization_bits >= 2 ** 32:
            raise ConfigError(f"config: 'privacy.secagg.quantization_bits' = "
                              f"{sa.quantization_bits} overflows the 32-bit sum of "
                              f"{expected} institutions; use at most "
                              f"{32 - math.ceil(math.log2(expected + 1))}")


def sampled_per_round(s: Scenario, num_institutions: int) -> int:
    """How many institutions Flower samples for training each round."""
    st = s.strategy
    return max(int(num_institutions * st.fraction_train),
               min(st.min_train_clients, num_institutions))


def known_institutions(s: Scenario) -> int | None:
    """How many institutions the scenario has, where the config alone says so."""
    if s.federation.institutions:
        return len(s.federation.names())
    if s.data.source == "synthetic" or s.data.partition != "natural":
        return s.federation.banks + s.federation.hospitals
    return None


# -- files and overrides --------------------------------------------------------------------
# keys that earlier run directories' config.toml hold: facts of one run (fedsilo.facts),
# never settings; read and dropped
RETIRED = frozenset({"output.run_dir", "output.resume", "output.stream"})


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a scenario file into flat keys; a bad file is a ConfigError naming it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        with p.open("rb") as fh:
            raw = tomllib.load(fh)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file '{path}' is not valid TOML: {exc}") from None
    return {k: v for k, v in flatten(raw).items() if k not in RETIRED}


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key=value``; the value is read as TOML, and as a bare string otherwise."""
    if "=" not in text:
        raise ConfigError(f"--set '{text}': expected key=value")
    key, raw = (part.strip() for part in text.split("=", 1))
    if key not in FIELDS:
        raise _unknown(key)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    if isinstance(DEFAULTS[key], str) and not isinstance(value, str):
        value = raw  # `--set scenario.name=2024` means the string
    return key, value


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> Scenario:
    """The scenario from an optional file plus ``key=value`` overrides."""
    flat = read_toml(path) if path else {}
    for item in overrides or []:
        key, value = parse_override(item)
        flat[key] = value
    return from_flat(flat)


def describe() -> list[tuple[str, Any, str]]:
    """(key, default, help) for every knob, in order: docs/configuration.md is made from this."""
    return [(k, DEFAULTS[k], f.metadata.get("help", "")) for k, f in FIELDS.items()]


def shown(value: Any) -> str:
    """A default as it is written in a TOML file."""
    if isinstance(value, str):
        return f'"{value}"'
    return str(value).lower() if isinstance(value, bool) else str(value)


def to_toml(s: Scenario) -> str:
    """The whole resolved scenario as a TOML file that ``load`` reads back unchanged."""
    import tomli_w

    return tomli_w.dumps(dataclasses.asdict(s))
