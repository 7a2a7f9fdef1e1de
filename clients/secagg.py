"""The node's side of secure aggregation: Flower's ``secaggplus_mod``, fed the update.

Flower's mod runs the protocol's four stages; in the third it calls the train handler and
masks what the handler returned. This mod sits in front of it and hands it exactly what
strategies/secagg.py expects to sum: the update (trained minus received weights) and its
weight (training examples, or 1 under institution-level DP). The reply that leaves the node
holds the masked vector and the declared training metrics; the arrays never leave.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Context, Message, MessageType, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters

from fedsilo import protocol
from fedsilo.facts import read as read_facts
from fedsilo.flower_compat import RECORD_KEY_CONFIGS, fitres_to_recorddict


def secure_aggregation(msg: Message, context: Context, call_next) -> Message:
    """Training messages of the SecAgg+ protocol go through Flower's mod; others pass."""
    if msg.metadata.message_type != MessageType.TRAIN or \
            RECORD_KEY_CONFIGS not in msg.content.config_records:
        return call_next(msg, context)
    uniform = read_facts(dict(context.run_config))[0].privacy.central.mode != "off"
    kept: dict = {}

    def update_as_fitres(m: Message, ctx: Context) -> Message:
        reply = call_next(m, ctx)
        if reply.has_error():
            raise RuntimeError(reply.error.reason)
        received, trained = m.content[protocol.ARRAYS], reply.content[protocol.ARRAYS]
        update = [np.asarray(trained[k].numpy(), dtype=np.float64)
                  - np.asarray(received[k].numpy(), dtype=np.float64)
                  for k in received.keys()]
        metrics = reply.content[protocol.METRICS]
        kept[protocol.METRICS] = metrics
        weight = 1 if uniform else int(metrics[protocol.NUM_EXAMPLES])
        fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(update), weight, {})
        return Message(fitres_to_recorddict(fitres, keep_input=True), reply_to=m)

    out = secaggplus_mod(msg, context, update_as_fitres)
    if out.has_error():
        return out
    content = RecordDict({RECORD_KEY_CONFIGS: out.content.config_records[RECORD_KEY_CONFIGS]})
    if protocol.METRICS in kept:
        content[protocol.METRICS] = kept[protocol.METRICS]
    return Message(content, reply_to=msg)
