"""The words of the wire: every record and metric name a message between the server and an
institution's node may carry, defined once.

The ServerApp, the strategies, the ClientApp and the privacy boundary all use these names;
the boundary refuses anything not declared here. Names that Flower itself reads or writes
(``server-round``, ``proximal-mu``, ``clipping_norm``, ``norm_bit``, the secure-aggregation
record) have Flower's spelling, and a test checks them against the installed Flower.
"""

from __future__ import annotations

# -- records of a message ------------------------------------------------------------------
ARRAYS = "arrays"  # the shared arrays (down: the global ones; up: the trained ones)
CONFIG = "config"  # per-round settings from the server
METRICS = "metrics"  # what a node reports about its training or evaluation
EVALUATION = "evaluation"  # in a training reply: the evaluation asked by EVALUATE_FIRST
INFO = "info"  # the handshake's answer
SCAFFOLD_CONTROL = "scaffold-c"  # down: SCAFFOLD's server control variate c
SCAFFOLD_DELTA_C = "scaffold-dc"  # up: c_i+ - c_i
SECAGG_RECORD = "secaggplus_configs"  # Flower's secure-aggregation record (RECORD_KEY_CONFIGS)

# -- keys of the config record (written by Flower's strategies) ----------------------------
SERVER_ROUND = "server-round"
PROXIMAL_MU = "proximal-mu"  # FedProx
CLIPPING_NORM = "clipping_norm"  # institution-level DP with clipping on the node
RUN_KEY = "fedsilo-run"  # the run's name, the same when it is resumed (fedsilo's own)
# a training message that also asks for the evaluation of the arrays it carries (the
# previous round's global model) before training (strategy.evaluation = 'with-training')
EVALUATE_FIRST = "fedsilo-evaluate"
# the evaluation after the last round (personalize.method = 'finetune' fine-tunes there)
FINAL = "fedsilo-final"

# -- the handshake -------------------------------------------------------------------------
# only what the server needs: who the node is and how many examples it holds
INFO_KEYS = frozenset({"institution", "kind", "num-train", "num-test"})

# -- metrics -------------------------------------------------------------------------------
NUM_EXAMPLES = "num-examples"  # the weight of a reply (training or test examples)
RAY_NODE = "ray-node"  # in a Ray simulation: which Ray node ran the institution
TRAIN_METRICS = frozenset({NUM_EXAMPLES, "train-loss",
                           "train-loss-first-epoch", "steps", "train-time-s", RAY_NODE})
# with privacy.dp: what the institution spent (its own accounting, reported to the server)
DP_METRICS = frozenset({"dp-epsilon", "dp-delta", "dp-noise-multiplier", "dp-max-grad-norm",
                        "dp-sampling-rate", "dp-steps", "dp-stopped"})
NORM_BIT = "norm_bit"  # client-adaptive clipping: whether this update was clipped
CENTRAL_DP_METRICS = frozenset({NORM_BIT})
# with train.early_stopping: the local epoch kept (0: the received weights) and its loss on
# the institution's validation rows
EARLY_STOP_METRICS = frozenset({"best-epoch", "validation-loss"})
TRAIN_DECLARED = TRAIN_METRICS | DP_METRICS | CENTRAL_DP_METRICS | EARLY_STOP_METRICS
# personalisation: the institution's own model on its own test split (never its weights)
PERSONAL_METRICS = frozenset({"personal-loss", "personal-accuracy", "personal-macro-f1",
                              "personal-confusion"})
EVAL_METRICS = frozenset({NUM_EXAMPLES, "loss", "accuracy", "macro-f1",
                          "confusion", "eval-time-s", RAY_NODE}) | PERSONAL_METRICS
CONFUSIONS = ("confusion", "personal-confusion")

# -- what an institution keeps between rounds, in its own node state -----------------------
STATE_SCAFFOLD_VARIATE = "scaffold-ci"  # SCAFFOLD's client variate c_i
STATE_DP = "dp"  # DP-SGD: the steps taken so far
# personalize.method = 'split': the arrays that stay with the institution (its own output
# layer): never sent, never aggregated
PRIVATE_PREFIX = "head.out."
OUTPUT_BIAS = "head.out.bias"  # the output layer: what the label-inference attack reads
OUTPUT_WEIGHT = "head.out.weight"
STATE_PERSONAL = "personal"  # 'ditto': the personal model; 'split': the private layer
STATE_ROUND = "memory-round"  # the last round that updated the institution's memory
