"""The synthetic bank/hospital corpus."""

from __future__ import annotations

import random
import re
from collections import Counter
from functools import cache

import pytest

from fedsilo.data import synthetic
from fedsilo.data.synthetic import LABELS, generate


@cache
def _pattern(label: str, kind: str) -> re.Pattern[str]:
    """A regex matching every untypo'd message of ``label`` at a ``kind`` institution."""
    def alt(options):
        return "(?:" + "|".join(re.escape(o) for o in sorted(options, key=len,
                                                             reverse=True)) + ")"

    bodies = []
    for template in synthetic.TEMPLATES[label][kind]:
        parts = re.split(r"(\{[a-z]+\})", template)
        body = "".join(alt(synthetic.SLOTS[p[1:-1]]) if p.startswith("{") else re.escape(p)
                       for p in parts)
        bodies.append(body)
    return re.compile(alt(synthetic.OPENINGS) + "(?:" + "|".join(bodies) + ")"
                      + alt(synthetic.CLOSINGS))


def _matches(text: str, label: str, kind: str) -> bool:
    """Whether ``text`` could have been rendered from a template of ``label`` (no typos)."""
    pat = _pattern(label, kind)
    variants = {text, text[0].lower() + text[1:]}
    return any(pat.fullmatch(v) for v in variants)


def _share(msgs, kind, label):
    at = [m for m in msgs if m.kind == kind]
    return sum(m.label == label for m in at) / len(at)


@pytest.fixture(scope="module")
def corpus():
    return generate(banks=3, hospitals=3, size=400, seed=7)


def test_deterministic_by_seed():
    a = generate(2, 2, 100, seed=3)
    b = generate(2, 2, 100, seed=3)
    assert a == b
    assert len(a) > 0


def test_differs_across_seeds():
    a = generate(2, 2, 100, seed=3)
    b = generate(2, 2, 100, seed=4)
    assert a != b
    texts_a = [m.text for m in a]
    texts_b = [m.text for m in b]
    n = min(len(texts_a), len(texts_b))
    same = sum(x == y for x, y in zip(texts_a[:n], texts_b[:n], strict=True))
    assert same < 0.1 * n


def test_institutions_and_kinds(corpus):
    names = list(dict.fromkeys(m.institution for m in corpus))
    assert names == ["bank-1", "bank-2", "bank-3", "hospital-1", "hospital-2", "hospital-3"]
    for m in corpus:
        assert m.kind == ("bank" if m.institution.startswith("bank") else "hospital")
        assert m.label in LABELS
    assert synthetic.institution_names(2, 1) == [("bank-1", "bank"), ("bank-2", "bank"),
                                                 ("hospital-1", "hospital")]


def test_every_label_appears(corpus):
    assert set(m.label for m in corpus) == set(LABELS)
    # and every label appears at both kinds of institution
    for kind in synthetic.KINDS:
        assert set(m.label for m in corpus if m.kind == kind) == set(LABELS)


def test_banks_see_bank_typical_labels(corpus):
    assert _share(corpus, "bank", "fraud_security") > 2 * _share(corpus, "hospital",
                                                                 "fraud_security")
    assert _share(corpus, "hospital", "urgent_care") > 2 * _share(corpus, "bank",
                                                                  "urgent_care")
    assert _share(corpus, "hospital", "appointment") > _share(corpus, "bank", "appointment")
    assert _share(corpus, "bank", "account_access") > _share(corpus, "hospital",
                                                             "account_access")
    bank_typical = {"account_access", "payment_billing", "fraud_security"}
    banks = [m for m in corpus if m.kind == "bank"]
    share = sum(m.label in bank_typical for m in banks) / len(banks)
    assert share > 0.5
    hospital_typical = {"appointment", "records_request", "urgent_care"}
    hospitals = [m for m in corpus if m.kind == "hospital"]
    share = sum(m.label in hospital_typical for m in hospitals) / len(hospitals)
    assert share > 0.5


def test_kind_skew_zero_gives_near_uniform_labels():
    msgs = generate(1, 1, 3000, seed=1, size_spread=0, label_noise=0, kind_skew=0.0)
    for kind in synthetic.KINDS:
        for lab in LABELS:
            assert _share(msgs, kind, lab) == pytest.approx(1 / len(LABELS), abs=0.03)


def test_label_weights_sum_to_one():
    for kind in synthetic.KINDS:
        for skew in (0.0, 0.5, 0.8, 1.0):
            w = synthetic.label_weights(kind, skew)
            assert len(w) == len(LABELS)
            assert sum(w) == pytest.approx(1.0)


def test_sizes_differ_with_spread():
    msgs = generate(4, 4, 200, seed=11, size_spread=0.5)
    sizes = Counter(m.institution for m in msgs)
    assert len(sizes) == 8
    assert len(set(sizes.values())) > 1
    assert max(sizes.values()) > 1.3 * min(sizes.values())
    assert min(sizes.values()) >= 20


def test_sizes_equal_without_spread():
    msgs = generate(3, 2, 57, seed=11, size_spread=0)
    sizes = Counter(m.institution for m in msgs)
    assert sorted(sizes.values()) == [57] * 5


def test_matcher_accepts_clean_renders():
    rng = random.Random(0)
    for label in LABELS:
        for kind in synthetic.KINDS:
            for _ in range(20):
                text = synthetic.render(label, kind, rng, typo_rate=0.0)
                assert _matches(text, label, kind), (label, kind, text)


def test_matcher_rejects_other_labels():
    # a rendering of one label does not fit the templates of another (so the noise test
    # below counts relabelled messages, not template overlap)
    rng = random.Random(1)
    for label in LABELS:
        for kind in synthetic.KINDS:
            for _ in range(10):
                text = synthetic.render(label, kind, rng, typo_rate=0.0)
                others = [o for o in LABELS if o != label and _matches(text, o, kind)]
                assert others == [], (label, kind, text, others)


def test_no_label_noise_keeps_template_labels():
    msgs = generate(2, 2, 250, seed=5, label_noise=0.0, typo_rate=0.0)
    assert len(msgs) > 500
    assert all(_matches(m.text, m.label, m.kind) for m in msgs)


def test_label_noise_changes_labels():
    noise = 0.3
    msgs = generate(2, 2, 250, seed=5, label_noise=noise, typo_rate=0.0)
    changed = sum(not _matches(m.text, m.label, m.kind) for m in msgs) / len(msgs)
    # a noisy message gets a random label, which is a different one 7 times in 8
    expected = noise * (len(LABELS) - 1) / len(LABELS)
    assert changed == pytest.approx(expected, abs=0.06)


def test_typos_appear_when_typo_rate_is_high():
    clean = generate(2, 2, 150, seed=9, label_noise=0.0, typo_rate=0.0)
    noisy = generate(2, 2, 150, seed=9, label_noise=0.0, typo_rate=0.5)
    assert all(_matches(m.text, m.label, m.kind) for m in clean)
    off_template = sum(not _matches(m.text, m.label, m.kind) for m in noisy) / len(noisy)
    assert off_template > 0.8
    # typos produce words the templates never use
    vocab = set()
    for by_kind in synthetic.TEMPLATES.values():
        for templates in by_kind.values():
            for t in templates:
                vocab.update(t.lower().split())
    for values in synthetic.SLOTS.values():
        for v in values:
            vocab.update(v.lower().split())
    for extra in synthetic.OPENINGS + synthetic.CLOSINGS:
        vocab.update(extra.lower().split())

    def unknown_words(msgs):
        words = [w for m in msgs for w in m.text.lower().split()]
        return sum(w not in vocab for w in words) / len(words)

    assert unknown_words(noisy) > 0.15
    assert unknown_words(noisy) > 5 * unknown_words(clean)


def test_typo_changes_only_long_alpha_words():
    rng = random.Random(0)
    assert synthetic._typo("abc", rng) == "abc"
    assert synthetic._typo("$120", rng) == "$120"
    changed = [synthetic._typo("payment", rng) for _ in range(50)]
    assert all(len(w) in (6, 7, 8) for w in changed)
    assert any(w != "payment" for w in changed)
    assert all(w[0] == "p" for w in changed)


def test_many_distinct_texts():
    msgs = generate(1, 1, 500, seed=2, size_spread=0)
    assert len(msgs) == 1000
    assert len({m.text for m in msgs}) > 800
