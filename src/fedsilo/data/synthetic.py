"""A synthetic corpus of messages that customers and patients send to banks and hospitals.

Deterministic by seed. One label set is shared by both kinds of institution; each kind has
its own phrasings (a bank's "appointment" is a branch visit, a hospital's "payment" is a
bill) and its own label mix, so institutions are non-IID by construction. Texts are built
from many templates per (label, kind) with slot values, optional openings and closings,
typos, and some label noise; words such as "account", "card", "appointment" and "urgent"
appear under several labels, so no single keyword gives a label away.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

LABELS: tuple[str, ...] = (
    "account_access",
    "payment_billing",
    "appointment",
    "records_request",
    "complaint",
    "fraud_security",
    "urgent_care",
    "general_info",
)

KINDS: tuple[str, ...] = ("bank", "hospital")

# How often each label occurs at an institution of each kind (before kind_skew mixing).
KIND_LABEL_WEIGHTS: dict[str, dict[str, float]] = {
    "bank": {"account_access": 0.22, "payment_billing": 0.22, "appointment": 0.05,
             "records_request": 0.06, "complaint": 0.12, "fraud_security": 0.20,
             "urgent_care": 0.02, "general_info": 0.11},
    "hospital": {"account_access": 0.05, "payment_billing": 0.12, "appointment": 0.24,
                 "records_request": 0.17, "complaint": 0.10, "fraud_security": 0.03,
                 "urgent_care": 0.18, "general_info": 0.11},
}

SLOTS: dict[str, list[str]] = {
    "amount": ["$25", "$49.99", "$120", "$310.50", "$1,200", "$87", "$2,450", "$15.75",
               "$640", "$9.99", "$5,000", "£200", "€75"],
    "date": ["Monday", "next Tuesday", "the 14th", "March 3", "yesterday", "last Friday",
             "June 21", "tomorrow morning", "the end of the month", "October 9", "today"],
    "product": ["checking account", "savings account", "credit card", "debit card",
                "mortgage", "car loan", "business account", "overdraft", "visa card",
                "line of credit", "joint account"],
    "channel": ["mobile app", "online banking", "website", "app", "web portal"],
    "merchant": ["Amazon", "a gas station", "an online store", "Walmart", "a hotel",
                 "a restaurant in Lisbon", "PayPal", "an airline", "a pharmacy"],
    "drug": ["metformin", "lisinopril", "atorvastatin", "amoxicillin", "insulin",
             "ibuprofen", "levothyroxine", "albuterol", "prednisone", "warfarin"],
    "dept": ["cardiology", "radiology", "the pediatric clinic", "dermatology",
             "orthopedics", "the lab", "oncology", "physical therapy", "neurology"],
    "doctor": ["Dr. Patel", "Dr. Nguyen", "Dr. Smith", "Dr. Garcia", "Dr. Okafor",
               "Dr. Rossi", "my GP", "the surgeon", "Dr. Kim"],
    "symptom": ["chest pain", "a high fever", "trouble breathing", "severe bleeding",
                "a bad allergic reaction", "a head injury", "fainting", "sudden numbness",
                "a seizure", "terrible abdominal pain"],
    "relative": ["my mother", "my son", "my husband", "my wife", "my father", "my daughter",
                 "my grandmother", "my partner"],
    "record": ["lab results", "x-ray images", "vaccination record", "discharge summary",
               "MRI report", "medical history", "test results", "prescription history"],
    "doc": ["bank statements", "tax form", "transaction history", "loan agreement",
            "account statement", "proof of address letter", "interest certificate"],
    "time": ["9am", "10:30", "after 3pm", "noon", "early morning", "late afternoon"],
    "n": ["2", "3", "5", "three", "several", "two", "4"],
}

# Templates per label and kind. "{x}" fills from SLOTS.
TEMPLATES: dict[str, dict[str, list[str]]] = {
    "account_access": {
        "bank": [
            "I can't log in to my {channel}, it keeps saying my password is wrong",
            "my {channel} account is locked after {n} failed attempts",
            "how do I reset my online banking password",
            "I never got the verification code to sign in",
            "the {channel} won't let me access my {product}",
            "I changed phones and now two-factor login doesn't work",
            "my username isn't recognized anymore when I try to sign in",
            "locked out of my account since {date}, please unlock it",
            "can you reactivate my online access, I forgot my security answers",
            "the login page just spins and never loads my accounts",
            "I need to update the phone number used for login codes",
        ],
        "hospital": [
            "I can't log in to the patient portal",
            "my patient portal account is locked, how do I reset the password",
            "I never received the activation email for the {channel}",
            "the portal won't let me sign in to see messages from {doctor}",
            "how do I get access to the portal for {relative}",
            "forgot my portal username, please help me get back in",
        ],
    },
    "payment_billing": {
        "bank": [
            "my payment of {amount} to my {product} hasn't gone through",
            "I was charged a fee of {amount} and I don't understand why",
            "how do I set up automatic payments for my {product}",
            "the transfer I made on {date} still shows as pending",
            "when is my {product} payment due this month",
            "I paid {amount} twice by mistake, can I get one refunded",
            "why was the interest on my {product} higher this month",
            "can I change the due date of my monthly payment",
            "a direct debit of {amount} bounced even though I had funds",
            "I want to pay off my {product} early, what's the payoff amount",
        ],
        "hospital": [
            "I received a bill for {amount} for my visit on {date} and have questions",
            "my insurance should have covered the {dept} visit but I was billed {amount}",
            "can I set up a payment plan for my hospital bill",
            "I already paid {amount} but the invoice still shows a balance",
            "what is this {amount} charge from {dept}",
            "how do I pay my bill online",
            "I was charged twice for the same appointment on {date}",
            "can you send an itemized bill for {relative}'s stay",
        ],
    },
    "appointment": {
        "bank": [
            "I'd like to book an appointment at the branch to talk about a {product}",
            "can I meet an advisor on {date} about my {product}",
            "I need to reschedule my branch appointment from {date}",
            "is there a slot {date} at {time} to open a {product}",
            "please cancel my meeting with the mortgage advisor",
        ],
        "hospital": [
            "I need to book an appointment with {doctor}",
            "can I reschedule my {dept} appointment from {date} to later in the week",
            "please cancel my appointment on {date}, something came up",
            "is there an opening with {doctor} {date} at {time}",
            "I'd like a follow-up visit in {dept} after my test",
            "how soon can {relative} be seen by {dept}",
            "I missed my appointment {date}, can I get a new one",
            "can I book a video consultation instead of coming in",
            "what time is my appointment with {doctor} again",
            "I need a referral appointment for {dept}",
        ],
    },
    "records_request": {
        "bank": [
            "please send me my {doc} for the last {n} months",
            "I need a copy of my {doc} for my accountant",
            "where can I download my {doc} from the {channel}",
            "can you mail me a paper {doc} for my {product}",
            "I need an official {doc} for a visa application",
        ],
        "hospital": [
            "I need a copy of my {record} from {date}",
            "please send my {record} to {doctor} at another clinic",
            "how do I request my full {record}",
            "can I get {relative}'s {record}, I am the legal guardian",
            "my {record} from {dept} is not showing in the portal",
            "please transfer my medical records to my new doctor",
            "I need my {record} for my insurance claim",
            "who do I ask for a copy of the {record} from my stay",
        ],
    },
    "complaint": {
        "bank": [
            "I am very unhappy with how I was treated at the branch on {date}",
            "I waited on hold for over an hour, this service is terrible",
            "your staff were rude when I asked about my {product}",
            "this is the {n} time I've had to call about the same problem, unacceptable",
            "I want to file a formal complaint about the fees on my {product}",
            "nobody ever answers my emails, I'm thinking of closing my account",
            "the {channel} is constantly broken and nobody fixes it",
        ],
        "hospital": [
            "I want to complain about the long wait in {dept} on {date}",
            "the nurse was rude to {relative} and nobody apologized",
            "I am disappointed with the care I received from {doctor}",
            "nobody called me back about my results, this is unacceptable",
            "I want to file a formal complaint about my stay",
            "the billing office keeps ignoring my messages, very frustrating",
            "I waited {n} hours in the waiting room, terrible experience",
        ],
    },
    "fraud_security": {
        "bank": [
            "there is a charge of {amount} from {merchant} that I did not make",
            "I think my {product} was stolen, please block it",
            "I got a text asking for my PIN, is it a scam",
            "someone withdrew {amount} from my account on {date} and it wasn't me",
            "please freeze my card, I see transactions from {merchant} I don't recognize",
            "I received a suspicious call from someone claiming to be the bank",
            "my card was declined and then I saw {n} unknown purchases",
            "I clicked a link in a phishing email and entered my login details",
            "unauthorized transfer of {amount} to an account I don't know",
            "I lost my wallet with my {product} inside",
        ],
        "hospital": [
            "I got a bill for a procedure I never had, I think someone used my identity",
            "someone called pretending to be from the hospital asking for my insurance number",
            "I received a suspicious email about my patient account",
            "my insurance shows a claim from {dept} on {date} that I never visited",
        ],
    },
    "urgent_care": {
        "bank": [
            "urgent: I'm stuck abroad and my card is blocked, I have no money for a hotel",
            "emergency, I need cash today and my card was swallowed by the ATM",
            "please help right now, my rent payment of {amount} is due today and failed",
        ],
        "hospital": [
            "{relative} has {symptom}, what should we do right now",
            "I have {symptom} since this morning, should I come to the ER",
            "urgent: my child has {symptom} after taking {drug}",
            "I'm having {symptom}, is the emergency department open",
            "{relative} fell and has {symptom}, please advise",
            "I think I'm having a reaction to {drug}, my throat feels tight",
            "severe pain after my surgery on {date}, is this normal",
            "my stitches opened and there is {symptom}, what do I do",
            "need help now, {relative} is not responding normally",
        ],
    },
    "general_info": {
        "bank": [
            "what are your branch opening hours on {date}",
            "what is the current interest rate on a {product}",
            "do you offer a {product} for students",
            "where is the nearest ATM to the city center",
            "what documents do I need to open a {product}",
            "is the branch open on public holidays",
            "do you have a branch that speaks Spanish",
        ],
        "hospital": [
            "what are the visiting hours in {dept}",
            "where can I park when visiting the hospital",
            "do you accept my insurance for {dept}",
            "is there a pharmacy on site that stocks {drug}",
            "what should I bring for my first visit",
            "how do I get to {dept} from the main entrance",
            "can {relative} stay overnight with me",
            "is the cafeteria open on weekends",
        ],
    },
}

OPENINGS = ["", "", "", "hi, ", "hello, ", "good morning, ", "hey, ", "dear team, ",
            "hi there, ", "excuse me, ", "quick question: ", "sorry to bother you, "]
CLOSINGS = ["", "", "", " thanks", " thank you", ". please help", " asap", ". regards",
            ". thanks in advance", "!", "?", " - sent from my phone", ". call me back please"]


@dataclass(frozen=True)
class Message:
    text: str
    label: str
    institution: str
    kind: str


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 4 or not word.isalpha():
        return word
    i = rng.randrange(1, len(word) - 1)
    op = rng.randrange(3)
    if op == 0:  # swap
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if op == 1:  # drop
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]  # double


def render(label: str, kind: str, rng: random.Random, typo_rate: float) -> str:
    """One message of ``label`` as an institution of ``kind`` would receive it."""
    template = rng.choice(TEMPLATES[label][kind])
    text = template
    while "{" in text:
        start = text.index("{")
        end = text.index("}", start)
        slot = text[start + 1:end]
        text = text[:start] + rng.choice(SLOTS[slot]) + text[end + 1:]
    text = rng.choice(OPENINGS) + text + rng.choice(CLOSINGS)
    words = [(_typo(w, rng) if rng.random() < typo_rate else w) for w in text.split(" ")]
    text = " ".join(words)
    if rng.random() < 0.3:
        text = text[0].upper() + text[1:]
    return text


def label_weights(kind: str, kind_skew: float) -> list[float]:
    """Mix of the kind's own label distribution and a uniform one."""
    own = KIND_LABEL_WEIGHTS[kind]
    u = 1.0 / len(LABELS)
    return [kind_skew * own[lab] + (1 - kind_skew) * u for lab in LABELS]


def institution_names(banks: int, hospitals: int) -> list[tuple[str, str]]:
    """(name, kind) for every institution, banks first."""
    return ([(f"bank-{i + 1}", "bank") for i in range(banks)]
            + [(f"hospital-{i + 1}", "hospital") for i in range(hospitals)])


def generate(banks: int, hospitals: int, size: int, seed: int, size_spread: float = 0.5,
             label_noise: float = 0.04, typo_rate: float = 0.06,
             kind_skew: float = 0.8, progress=None) -> list[Message]:
    """The messages held by every institution of the federation; ``progress(done, total)``
    is called as institutions are made."""
    return corpus(LABELS, label_weights, render, "", banks, hospitals, size, seed,
                  size_spread, label_noise, typo_rate, kind_skew, progress)


def corpus(labels, weights_of, render_one, key: str, banks: int, hospitals: int, size: int,
           seed: int, size_spread: float, label_noise: float, typo_rate: float,
           kind_skew: float, progress=None) -> list[Message]:
    """Every institution's messages of a task (its ``labels``, ``weights_of(kind, skew)``
    and ``render_one(label, kind, rng, typo_rate)``), each institution drawn from its own
    random stream named by ``key``, the seed and its name."""
    out: list[Message] = []
    names = institution_names(banks, hospitals)
    for done, (name, kind) in enumerate(names, start=1):
        if progress is not None:
            progress(done, len(names))
        rng = random.Random(f"{key}{seed}:{name}")
        n = max(20, int(round(size * rng.lognormvariate(0.0, size_spread)))) \
            if size_spread > 0 else size
        weights = weights_of(kind, kind_skew)
        for _ in range(n):
            label = rng.choices(labels, weights=weights)[0]
            text = render_one(label, kind, rng, typo_rate)
            if rng.random() < label_noise:
                label = rng.choice(labels)
            out.append(Message(text=text, label=label, institution=name, kind=kind))
    return out
