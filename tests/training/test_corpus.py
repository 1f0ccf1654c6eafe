"""The built-in bilingual demo corpus of glm_hf.demo.corpus: determinism, fact format, the held-out split and sizes."""

from collections import Counter

import pytest

from glm_hf import corpus
from glm_hf.demo.corpus import MASK, Fact, documents, facts, frequency_baseline, split_facts

KINDS = {"capital", "element", "arithmetic", "calendar"}


@pytest.fixture(scope="module")
def split() -> tuple[list[Fact], list[Fact]]:
    return split_facts()


@pytest.fixture(scope="module")
def training_text(split) -> str:
    return "\n".join(documents(held_out=split[1]))


def test_same_seed_gives_identical_output():
    held_out = split_facts(seed=3)[1]
    assert facts(seed=3) == facts(seed=3)
    assert split_facts(seed=3) == split_facts(seed=3)
    assert documents(seed=3, held_out=held_out) == documents(seed=3, held_out=held_out)
    assert facts(seed=3) != facts(seed=4)
    assert documents(seed=3, include_prose=False) != documents(seed=4, include_prose=False)


def test_every_fact_has_one_mask_and_fills_in_its_answer():
    items = facts()
    for fact in items:
        assert fact.text.count(MASK) == 1
        assert fact.answer and fact.answer in fact.filled
        assert MASK not in fact.filled
    assert len({fact.filled for fact in items}) == len(items)


def test_fact_needs_exactly_one_mask():
    with pytest.raises(ValueError):
        Fact("no blank here", "x", "capital", "en")
    with pytest.raises(ValueError):
        Fact(f"{MASK} and {MASK}", "x", "capital", "en")


def test_every_kind_comes_in_both_languages_with_enough_entities():
    counts = Counter((fact.kind, fact.language) for fact in facts())
    assert set(counts) == {(kind, language) for kind in KINDS for language in corpus.LANGUAGES}
    assert counts["capital", "en"] == counts["capital", "zh"] >= 60 * 4
    assert counts["element", "en"] == counts["element", "zh"] >= 40 * 4
    assert Fact("The capital of France is [MASK].", "Paris", "capital", "en") in facts()
    assert Fact("氢的化学符号是[MASK]。", "H", "element", "zh") in facts()
    assert Fact("三月之后是[MASK]。", "四月", "calendar", "zh") in facts()
    assert Fact("3 plus 4 is [MASK].", "7", "arithmetic", "en") in facts()


def test_split_partitions_facts_by_kind_and_language(split):
    train, held_out = split
    assert sorted(train + held_out, key=repr) == sorted(facts(), key=repr)
    sizes = Counter((fact.kind, fact.language) for fact in facts())
    held = Counter((fact.kind, fact.language) for fact in held_out)
    assert held == {group: round(0.1 * size) for group, size in sizes.items()}
    assert split_facts(held_out=0.0)[1] == []
    with pytest.raises(ValueError):
        split_facts(held_out=corpus.MAX_HELD_OUT + 0.01)


def test_held_out_sentences_never_occur_in_training_documents(split, training_text):
    train, held_out = split
    assert not [fact.filled for fact in held_out if fact.filled in training_text]
    assert all(fact.filled in training_text for fact in train)


def test_held_out_entities_are_trained_in_both_languages(split, training_text):
    train, held_out = split
    entity_of = {item.fact.filled: item.entity for item in corpus._items()}
    trained = {(entity_of[fact.filled], fact.language) for fact in train}
    for fact in held_out:
        assert all((entity_of[fact.filled], language) in trained for language in corpus.LANGUAGES)
        assert fact.answer in training_text


def test_documents_hold_translation_pairs_and_every_fact_when_nothing_is_held_out():
    text = "\n".join(documents(include_prose=False))
    assert "The capital of France is Paris. 法国的首都是巴黎。" in text
    assert all(fact.filled in text for fact in facts())


def test_sizes_are_in_the_expected_ranges(split):
    without_prose = documents(include_prose=False, held_out=split[1])
    with_prose = documents(held_out=split[1])
    assert 300_000 <= sum(len(doc.encode()) for doc in without_prose) <= 1_000_000
    assert 1_000_000 <= sum(len(doc.encode()) for doc in with_prose) <= 3_000_000
    assert len(without_prose) > 3_000 and all(without_prose)
    facts_only = documents(include_prose=False, include_everyday=False, held_out=split[1])
    assert 100_000 <= sum(len(doc.encode()) for doc in facts_only) <= 300_000
    assert not any("every day" in doc for doc in facts_only) and any("every day" in doc for doc in without_prose)


def test_frequency_baseline_on_a_hand_made_example():
    train = [
        Fact("[MASK] one", "x", "capital", "en"),
        Fact("[MASK] two", "x", "capital", "en"),
        Fact("[MASK] three", "y", "capital", "en"),
        Fact("[MASK] four", "z", "capital", "zh"),
        Fact("[MASK] five", "w", "capital", "zh"),  # a tie with "z": the alphabetically first answer wins
    ]
    held_out = [
        Fact("[MASK] six", "x", "capital", "en"),  # hit
        Fact("[MASK] seven", "y", "capital", "en"),  # miss
        Fact("[MASK] eight", "w", "capital", "zh"),  # hit
        Fact("[MASK] nine", "x", "element", "en"),  # miss: no training answers of this kind
    ]
    assert frequency_baseline(train, held_out) == 0.5
    with pytest.raises(ValueError):
        frequency_baseline(train, [])


def test_frequency_baseline_on_the_default_split_is_low(split):
    assert 0.0 < frequency_baseline(*split) < 0.1
