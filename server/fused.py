"""One message per institution per round (``strategy.evaluation = 'with-training'``).

Round r's training message carries round r-1's global arrays, which are exactly what round
r-1's evaluation message would carry. So an institution sampled for both gets a single
message: the training message, marked ``EVALUATE_FIRST``; its node evaluates the arrays on
its test split before training and puts the evaluation in the reply as a second metric
record. ``fuse`` builds what to send; ``split`` turns the replies back into the training
replies and the evaluation replies the strategy would have received, each the reply to the
message it answers, so aggregation, the ledger and the metrics rows do not change.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Error, Message, RecordDict

from fedsilo import config, protocol


def fuses(s: config.Scenario) -> bool:
    """Whether scenario ``s`` evaluates with training. Not with SecAgg+ (its training is a
    protocol of several messages) nor with ``scenario.target_accuracy`` (the round after
    the one that reaches it must not train at all)."""
    return (s.strategy.evaluation == "with-training" and not s.privacy.secagg.enabled
            and s.scenario.target_accuracy <= 0)


def fuse(train: list[Message], evaluate: list[Message]
         ) -> tuple[list[Message], dict[int, Message]]:
    """The messages to send, and (node id -> evaluation message) for those evaluations that
    ride on a training message. Evaluations of institutions not training this round are
    sent as they are."""
    asked = {m.metadata.dst_node_id: m for m in evaluate}
    riders: dict[int, Message] = {}
    send = []
    for msg in train:
        node = msg.metadata.dst_node_id
        if node in asked:
            riders[node] = asked.pop(node)
            msg = _asking_evaluation(msg)
        send.append(msg)
    return send + list(asked.values()), riders


def split(replies: list[Message], riders: dict[int, Message]
          ) -> tuple[list[Message], list[Message]]:
    """(training replies, evaluation replies). A training reply that also carries an
    evaluation gives back both; a failed one fails both."""
    train, evaluate = [], []
    for reply in replies:
        if reply.metadata.message_type != "train":
            evaluate.append(reply)
            continue
        asked = riders.get(reply.metadata.src_node_id)
        if asked is None:
            train.append(reply)
        elif reply.has_error():
            train.append(reply)
            evaluate.append(Message(Error(reply.error.code, reply.error.reason),
                                    reply_to=asked))
        elif protocol.EVALUATION not in reply.content:
            train.append(reply)
            evaluate.append(Message(Error(0, "the training reply carries no evaluation"),
                                    reply_to=asked))
        else:
            metrics = reply.content[protocol.EVALUATION]
            content = RecordDict({k: v for k, v in reply.content.items()
                                  if k != protocol.EVALUATION})
            train.append(_same_reply(reply, content))
            evaluate.append(Message(RecordDict({protocol.METRICS: metrics}), reply_to=asked))
    return train, evaluate


def _asking_evaluation(msg: Message) -> Message:
    """``msg`` with EVALUATE_FIRST in its (own copy of the) config record."""
    content = RecordDict(dict(msg.content.items()))
    content[protocol.CONFIG] = ConfigRecord({**dict(msg.content[protocol.CONFIG]),
                                             protocol.EVALUATE_FIRST: True})
    return Message(content, dst_node_id=msg.metadata.dst_node_id,
                   message_type=msg.metadata.message_type, group_id=msg.metadata.group_id,
                   ttl=msg.metadata.ttl)


def _same_reply(reply: Message, content: RecordDict) -> Message:
    """``reply`` with ``content`` (its metadata kept: sender, the message it answers)."""
    reply.content = content
    return reply
