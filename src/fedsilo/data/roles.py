"""The hard synthetic task (``data.synthetic.task = "roles"``): who did what, and whether
it happened.

Every message reports one action between the customer's side (the writer, a relative, the
writer's company) and the institution's side (the bank, the clinic, a named doctor or
office). The label is who acted and whether the action happened:

    customer_did         "my husband paid the clinic on Monday"
    institution_did      "the clinic paid my husband on Monday"
    customer_did_not     "my husband never paid the clinic"
    institution_did_not  "the clinic has not paid my husband yet"

The two sides of a pair use the same words in another order, and passive sentences turn
the order around again ("the clinic was paid by my husband" is ``customer_did``). Negation
words appear under every label ("not sure who to ask, but ..."), so neither a bag of words
nor a mean of frozen token vectors separates the labels well; a fine-tuned encoder layer
can. Deterministic by seed, generated offline, with the same typos and label noise as the
default corpus.
"""

from __future__ import annotations

import random

from fedsilo.data import synthetic
from fedsilo.data.synthetic import Message, _typo

LABELS: tuple[str, ...] = ("customer_did", "institution_did", "customer_did_not",
                           "institution_did_not")



def task_labels(task: str) -> tuple[str, ...]:
    """The label set of synthetic task ``task`` (``data.synthetic.task``)."""
    return LABELS if task == "roles" else tuple(synthetic.LABELS)


# the customer's side and the institution's side, by kind
CUSTOMER: dict[str, list[str]] = {
    "bank": ["my husband", "my wife", "my mother", "my son", "our company", "my partner",
             "my father", "my business partner", "the account holder", "my daughter"],
    "hospital": ["my husband", "my wife", "my mother", "my son", "the patient",
                 "my partner", "my father", "my daughter", "my grandmother", "my caregiver"],
}
INSTITUTION: dict[str, list[str]] = {
    "bank": ["the bank", "your branch", "the loans office", "your fraud team",
             "the branch manager", "customer service", "your card department",
             "the mortgage team"],
    "hospital": ["the clinic", "the hospital", "Dr. Patel", "Dr. Nguyen", "the billing office",
                 "the front desk", "the pharmacy", "the radiology department"],
}
# (past, participle, base) of actions either side can do to the other
VERBS: dict[str, list[tuple[str, str, str]]] = {
    "bank": [("paid", "paid", "pay"), ("called", "called", "call"),
             ("emailed", "emailed", "email"), ("contacted", "contacted", "contact"),
             ("reimbursed", "reimbursed", "reimburse"), ("warned", "warned", "warn"),
             ("charged", "charged", "charge"), ("sent a letter to", "sent a letter to",
                                                "send a letter to"),
             ("answered", "answered", "answer"), ("notified", "notified", "notify")],
    "hospital": [("paid", "paid", "pay"), ("called", "called", "call"),
                 ("emailed", "emailed", "email"), ("contacted", "contacted", "contact"),
                 ("reimbursed", "reimbursed", "reimburse"), ("billed", "billed", "bill"),
                 ("referred", "referred", "refer"), ("sent the results to",
                                                     "sent the results to",
                                                     "send the results to"),
                 ("answered", "answered", "answer"), ("notified", "notified", "notify")],
}
TAILS = ["", "", "", " on Monday", " yesterday", " last week", " twice", " about the bill",
         " about the transfer", " this morning", " before the deadline", " on the 14th"]
# negation words under every label
OPENINGS = ["", "", "", "", "not sure who to ask, but ", "I do not know if this matters: ",
            "never had this before: ", "no rush, but ", "hello, ", "quick question: ",
            "just so you know, ", "I can't tell if this is normal: "]
CLOSINGS = ["", "", "", ". please check", ". not sure why", ". is that right?", " thanks",
            ". no idea what happened", ". can you confirm", "."]

# active sentences: {a} acts on {b}
DID = ["{a} {past} {b}{tail}", "{a} already {past} {b}{tail}", "{a} has {pp} {b}{tail}",
       "yes, {a} did {base} {b}{tail}", "{a} finally {past} {b}{tail}"]
DID_NOT = ["{a} did not {base} {b}{tail}", "{a} never {past} {b}{tail}",
           "{a} has not {pp} {b} yet", "{a} still hasn't {pp} {b}",
           "{a} didn't {base} {b}{tail}", "{a} forgot to {base} {b}{tail}"]
# passive sentences: {b} is acted on by {a} (the actor comes last)
DID_PASSIVE = ["{b} was {pp} by {a}{tail}", "{b} has been {pp} by {a}{tail}"]
DID_NOT_PASSIVE = ["{b} was not {pp} by {a}{tail}", "{b} has never been {pp} by {a}"]


def _clean(text: str) -> str:
    # "sent a letter to" in the passive: "... was sent a letter to by ..." reads badly
    return text.replace(" to by ", " by ")


def render(label: str, kind: str, rng: random.Random, typo_rate: float) -> str:
    """One message of ``label`` as an institution of ``kind`` would receive it."""
    customer_acts = label.startswith("customer")
    happened = not label.endswith("_not")
    cust, inst = rng.choice(CUSTOMER[kind]), rng.choice(INSTITUTION[kind])
    a, b = (cust, inst) if customer_acts else (inst, cust)
    past, pp, base = rng.choice(VERBS[kind])
    if rng.random() < 0.3:
        template = rng.choice(DID_PASSIVE if happened else DID_NOT_PASSIVE)
    else:
        template = rng.choice(DID if happened else DID_NOT)
    text = _clean(template.format(a=a, b=b, past=past, pp=pp, base=base,
                                  tail=rng.choice(TAILS)))
    text = rng.choice(OPENINGS) + text + rng.choice(CLOSINGS)
    words = [(_typo(w, rng) if rng.random() < typo_rate else w) for w in text.split(" ")]
    text = " ".join(words)
    return text[0].upper() + text[1:] if rng.random() < 0.3 else text


def label_weights(kind: str, kind_skew: float) -> list[float]:
    """Banks hear more about what they did, hospitals about what patients did; mixed with a
    uniform share by ``1 - kind_skew``."""
    own = {"bank": [0.2, 0.3, 0.2, 0.3], "hospital": [0.3, 0.2, 0.3, 0.2]}[kind]
    u = 1.0 / len(LABELS)
    return [kind_skew * w + (1 - kind_skew) * u for w in own]


def generate(banks: int, hospitals: int, size: int, seed: int, size_spread: float = 0.5,
             label_noise: float = 0.04, typo_rate: float = 0.06,
             kind_skew: float = 0.8, progress=None) -> list[Message]:
    """The messages held by every institution of the federation (as
    ``synthetic.generate``, with this task's labels)."""
    return synthetic.corpus(LABELS, label_weights, render, "roles:", banks, hospitals, size,
                            seed, size_spread, label_noise, typo_rate, kind_skew, progress)
