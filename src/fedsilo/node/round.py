"""One institution's round, free of Flower: a pipeline of named steps.

A training round is

    load the shared arrays -> [attacker: poison its labels] -> local optimisation
    (plain or FedProx, SCAFFOLD-corrected, or DP-SGD) -> [attacker: poison the update]
    -> [institution-level DP: clip the update on the node] -> package the reply

``plan_training`` lists the steps that a scenario needs in a given round; ``run_training``
runs them over one ``RoundState``. Each step does one thing and is a plain function: a new
behaviour is a new step, not a new branch inside another. What the institution keeps
between rounds (``Memory``: SCAFFOLD's client variate, the DP-SGD steps spent) stays on its
side; the ClientApp stores it in the node's own state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from fedsilo.arrays import Arrays
from fedsilo.config import Scenario, TrainSection
from fedsilo.faults import attack_update, flip_labels, flips_labels
from fedsilo.models.scoped import ScopedModel
from fedsilo.node.memory import Memory
from fedsilo.node.silo import Silo
from fedsilo.privacy import dpsgd
from fedsilo.privacy.central import clip_update
from fedsilo.protocol import NORM_BIT, NUM_EXAMPLES, PRIVATE_PREFIX
from fedsilo.training import (
    TrainStats,
    evaluate,
    holdout,
    local_train,
    lr_sum,
    round_seed,
)
from fedsilo.training import scaffold as sc


@dataclass
class Instruction:
    """What the server sent for this round (the ClientApp reads it off the message)."""

    server_round: int
    arrays: Arrays  # the shared arrays x
    proximal_mu: float = 0.0  # FedProx
    control: Arrays | None = None  # SCAFFOLD's server control variate c
    clip_norm: float | None = None  # institution-level DP: the L2 bound on the update


@dataclass
class Reply:
    """What leaves the node after training: exactly the protocol's records."""

    arrays: Arrays  # trained weights (SCAFFOLD: the model delta)
    metrics: dict[str, float | int]
    scaffold_delta_c: Arrays | None = None


@dataclass
class RoundState:
    """Everything one training round reads and writes, passed from step to step."""

    silo: Silo
    instruction: Instruction
    memory: Memory
    seed: int
    model: ScopedModel | None = None
    labels: np.ndarray | None = None
    trained: Arrays | None = None  # y: the weights that will be sent
    stats: TrainStats | None = None
    metrics: dict[str, float | int] = field(default_factory=dict)
    reply: Reply | None = None


Step = Callable[[RoundState], None]


# -- the steps ------------------------------------------------------------------------------
def inject_crash(st: RoundState) -> None:
    """``faults.crash``: this institution's client fails (to test failure handling)."""
    raise RuntimeError("injected crash (faults.crash)")


def load_shared_arrays(st: RoundState) -> None:
    """Start from the received shared arrays, on this institution's own training labels
    (``personalize.method = 'split'``: with its own private output layer)."""
    st.model = st.silo.model()
    st.model.set_arrays(with_private_layer(st.silo, st.model, st.instruction.arrays,
                                           st.memory.personal))
    st.labels = st.silo.targets("train")


def is_private(name: str, s: Scenario) -> bool:
    return s.personalize.method == "split" and name.startswith(PRIVATE_PREFIX)


def with_private_layer(silo: Silo, model: ScopedModel, shared: Arrays,
                       private: Arrays | None) -> Arrays:
    """The arrays the model runs with: the shared ones, and with 'split' the institution's
    private output layer (its own, or in its first round a seeded fresh one)."""
    if silo.scenario.personalize.method != "split":
        return shared
    if private is None:  # as torch initialises a Linear layer, seeded per institution
        import torch

        gen = torch.Generator().manual_seed(round_seed(silo.scenario.scenario.seed, 0,
                                                       f"{silo.name}/private"))
        private = {}
        for name, p in model.trainable().items():
            if name.startswith(PRIVATE_PREFIX):
                bound = 1 / max(1, model.head.out.in_features) ** 0.5
                private[name] = ((torch.rand(p.shape, generator=gen) * 2 - 1)
                                 * bound).numpy()
    return {**shared, **private}


def keep_private_layer(st: RoundState) -> None:
    """'split': the trained output layer goes to the institution's memory, the rest is
    what it sends."""
    s = st.silo.scenario
    st.memory.personal = {k: v for k, v in st.trained.items() if is_private(k, s)}
    st.trained = {k: v for k, v in st.trained.items() if not is_private(k, s)}


def poison_labels(st: RoundState) -> None:
    """A malicious institution trains on wrong labels (``label_flip*`` behaviours)."""
    st.labels = flip_labels(st.labels, len(st.silo.labels))


def optimise(st: RoundState) -> None:
    """Plain local training (FedProx's proximal term when the server sends mu)."""
    s = st.silo.scenario
    source = st.silo.inputs(st.model, "train")
    validation = None
    if s.train.stops_early(s.model.scope):  # the same rows every round
        validation = holdout(len(source), s.train.validation_share,
                             round_seed(s.scenario.seed, 0, st.silo.name))
    st.stats = local_train(st.model, source, st.labels, s.train, st.seed,
                           st.silo.runtime.device, prox_mu=st.instruction.proximal_mu,
                           validation=validation)
    st.trained = st.model.get_arrays()
    if validation is not None:
        st.metrics.update({"best-epoch": st.stats.best_epoch,
                           "validation-loss": st.stats.validation_loss})


def optimise_scaffold(st: RoundState) -> None:
    """Local training with SCAFFOLD's correction c - c_i added to every gradient."""
    import torch

    s, c = st.silo.scenario, st.instruction.control
    c_i = _client_variate(st)
    correction = {k: torch.from_numpy(c[k] - c_i[k]) for k in c}
    st.stats = local_train(st.model, st.silo.inputs(st.model, "train"), st.labels, s.train,
                           st.seed, st.silo.runtime.device,
                           prox_mu=st.instruction.proximal_mu, correction=correction)
    st.trained = st.model.get_arrays()


def optimise_dp_sgd(st: RoundState) -> None:
    """One round of DP-SGD, or none when it would take the institution past
    ``privacy.max_epsilon`` (then it keeps the received weights and weighs 0)."""
    s = st.silo.scenario
    p = s.privacy
    source = st.silo.inputs(st.model, "train")
    ditto = s.personalize.method == "ditto"
    plan = dpsgd.plan(p, s.train, len(source), s.scenario.rounds,
                      personal_epochs=s.personalize.epochs if ditto else 0)
    spent = st.memory.dp_steps or 0
    stopped = p.max_epsilon > 0 and \
        plan.epsilon_after(spent + plan.all_steps_per_round) > p.max_epsilon
    if stopped:
        st.stats = TrainStats(loss=0.0, first_loss=0.0, steps=0, examples=0)
    else:
        loss, steps = dpsgd.dp_train(st.model, source, st.labels, s.train, plan, st.seed,
                                     st.silo.runtime.device)
        spent += steps
        st.stats = TrainStats(loss=loss, first_loss=loss, steps=steps, examples=len(source))
    st.trained = st.model.get_arrays()
    if ditto and not stopped:  # the personal model by DP-SGD too, counted in the same budget
        w = st.instruction.arrays
        st.model.set_arrays(st.memory.personal if st.memory.personal is not None else w)
        _, steps = dpsgd.dp_train(
            st.model, source, st.labels, personal_training(s), plan.personal(),
            round_seed(s.scenario.seed, st.instruction.server_round,
                       f"{st.silo.name}/personal"), st.silo.runtime.device,
            prox_mu=s.personalize.lam, anchor_to=w)
        spent += steps
        st.memory.personal = st.model.get_arrays()
    st.memory.dp_steps = spent
    st.metrics.update({
        "dp-epsilon": plan.epsilon_after(spent), "dp-delta": plan.delta,
        "dp-noise-multiplier": plan.noise_multiplier, "dp-max-grad-norm": plan.max_grad_norm,
        "dp-sampling-rate": plan.sampling_rate, "dp-steps": spent,
        "dp-stopped": int(stopped)})


def train_personal(st: RoundState) -> None:
    """Ditto: the institution's personal model v (its last one, or the received shared
    weights w in its first round) trained on its own data for ``personalize.epochs`` with
    lambda/2 * ||v - w||^2; kept in its memory, never sent."""
    s = st.silo.scenario
    w = st.instruction.arrays
    st.model.set_arrays(st.memory.personal if st.memory.personal is not None else w)
    local_train(st.model, st.silo.inputs(st.model, "train"), st.labels,
                personal_training(s), round_seed(s.scenario.seed, st.instruction.server_round,
                                                 f"{st.silo.name}/personal"),
                st.silo.runtime.device, prox_mu=s.personalize.lam, anchor_to=w)
    st.memory.personal = st.model.get_arrays()


def personal_training(s: Scenario) -> TrainSection:
    """The local training settings of a personal model (``personalize.epochs``)."""
    return replace(s.train, local_epochs=s.personalize.epochs)


def poison_update(st: RoundState) -> None:
    """A malicious institution sends a transformed update (``faults.behaviour``)."""
    st.trained = attack_update(st.instruction.arrays, st.trained, st.silo.scenario.faults,
                               st.seed)


def clip_on_node(st: RoundState) -> None:
    """Institution-level DP with clipping on the node: the update is clipped to the norm
    the server sent; adaptive clipping also reports whether it was clipped."""
    if st.instruction.clip_norm is None:
        raise RuntimeError("institution-level DP clips on the node, but the server sent no "
                           "clipping norm")
    st.trained, clipped = clip_update(st.instruction.arrays, st.trained,
                                      st.instruction.clip_norm)
    if st.silo.scenario.privacy.central.mode == "client-adaptive":
        st.metrics[NORM_BIT] = int(clipped)


def package(st: RoundState) -> None:
    """The reply: the trained shared arrays and the declared training metrics."""
    st.reply = Reply(arrays=st.trained, metrics=_train_metrics(st))


def package_scaffold(st: RoundState) -> None:
    """SCAFFOLD's reply: exactly the two deltas it needs (model and control variate);
    the institution keeps its new variate c_i+ in its memory."""
    x, y, c = st.instruction.arrays, st.trained, st.instruction.control
    c_i = _client_variate(st)
    t, scope = st.silo.scenario.train, st.silo.scenario.model.scope
    sums = {part: lr_sum(t, scope, part, st.stats.steps) for part in ("head.", "encoder")}
    c_new = sc.client_variate(c_i, c, x, y, st.stats.steps, t.lr,
                              {k: sums["head." if k.startswith("head.") else "encoder"]
                               for k in x})
    st.memory.scaffold_variate = c_new
    st.reply = Reply(arrays={k: y[k] - x[k] for k in x}, metrics=_train_metrics(st),
                     scaffold_delta_c={k: c_new[k] - c_i[k] for k in x})


def _client_variate(st: RoundState) -> Arrays:
    if st.memory.scaffold_variate is not None:
        return st.memory.scaffold_variate
    return {k: np.zeros_like(v) for k, v in st.instruction.control.items()}


def _train_metrics(st: RoundState) -> dict[str, float | int]:
    return {NUM_EXAMPLES: st.stats.examples, "train-loss": st.stats.loss,
            "train-loss-first-epoch": st.stats.first_loss, "steps": st.stats.steps,
            **st.metrics}


# -- the round ------------------------------------------------------------------------------
def plan_training(silo: Silo, ins: Instruction) -> list[Step]:
    """The steps of ``silo``'s training round ``ins.server_round``, in order."""
    s, name = silo.scenario, silo.name
    attacker = name in s.faults.attackers()
    steps: list[Step] = []
    if name in s.faults.crashing() and ins.server_round >= s.faults.crash_from_round:
        steps.append(inject_crash)
    steps.append(load_shared_arrays)
    if attacker and flips_labels(s.faults):
        steps.append(poison_labels)
    if s.privacy.dp:
        steps.append(optimise_dp_sgd)
    elif ins.control is not None:
        steps.append(optimise_scaffold)
    else:
        steps.append(optimise)
    if s.personalize.method == "ditto" and not s.privacy.dp:  # (DP-SGD: in its step)
        steps.append(train_personal)
    if s.personalize.method == "split":
        steps.append(keep_private_layer)
    if attacker:
        steps.append(poison_update)
    if s.privacy.central.mode.startswith("client"):
        steps.append(clip_on_node)
    steps.append(package_scaffold if ins.control is not None else package)
    return steps


def run_training(silo: Silo, ins: Instruction, memory: Memory) -> Reply:
    """Run ``silo``'s training round; ``memory`` is updated in place."""
    t0 = time.perf_counter()
    st = RoundState(silo, ins, memory,
                    round_seed(silo.scenario.scenario.seed, ins.server_round, silo.name))
    for step in plan_training(silo, ins):
        step(st)
    memory.round = ins.server_round
    st.reply.metrics["train-time-s"] = time.perf_counter() - t0
    return st.reply


def run_evaluation(silo: Silo, arrays: Arrays, personal: Arrays | None = None,
                   finetune: bool = False) -> dict[str, float | int | list[int]]:
    """The shared arrays scored on this institution's own test split; with a personal
    model (``personal``, or with ``finetune`` the shared arrays trained further on the
    institution's own training split), that one too."""
    t0 = time.perf_counter()
    model = silo.model()
    if silo.scenario.personalize.method == "split":  # the only model: body + own layer
        arrays = personal = with_private_layer(silo, model, arrays, personal)
    model.set_arrays(arrays)
    test, labels = silo.inputs(model, "test"), silo.targets("test")
    stats = evaluate(model, test, labels, len(silo.labels), silo.runtime.device)
    out = {NUM_EXAMPLES: stats.examples, "loss": stats.loss, "accuracy": stats.accuracy,
           "macro-f1": stats.macro_f1, "confusion": [int(v) for v in stats.confusion.ravel()]}
    if finetune:
        s = silo.scenario
        local_train(model, silo.inputs(model, "train"), silo.targets("train"),
                    personal_training(s), round_seed(s.scenario.seed, 0, f"{silo.name}/finetune"),
                    silo.runtime.device)
        personal = model.get_arrays()
    if personal is not None:
        model.set_arrays(personal)
        own = evaluate(model, test, labels, len(silo.labels), silo.runtime.device)
        out.update({"personal-loss": own.loss, "personal-accuracy": own.accuracy,
                    "personal-macro-f1": own.macro_f1,
                    "personal-confusion": [int(v) for v in own.confusion.ravel()]})
    out["eval-time-s"] = time.perf_counter() - t0
    return out
