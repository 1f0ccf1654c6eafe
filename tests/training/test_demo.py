"""`glm-hf demo`: the shipped tokenizer is current, and a short run trains, evaluates and saves everything."""

import pytest
from huggingface_hub import ModelCard
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from glm_hf import GLMForConditionalGeneration, GLMTokenizer, corpus
from glm_hf.cli import main
from glm_hf.demo import run as demo
from glm_hf.demo.run import DEMO_TOKENIZER_DIR, DemoSettings, demo_training_texts, run_demo, train_demo_tokenizer


def test_shipped_demo_tokenizer_is_what_the_build_script_trains():
    shipped = GLMTokenizer.from_pretrained(DEMO_TOKENIZER_DIR)
    assert shipped.get_vocab() == train_demo_tokenizer().get_vocab()
    assert shipped.mask_token_ids == [4, 5, 6]


def test_demo_training_text_never_states_a_held_out_fact():
    documents, train, held_out = demo_training_texts()
    joined = "\n".join(documents)
    assert not any(fact.filled in joined for fact in held_out)
    assert sum(fact.filled in joined for fact in train[:200]) == 200


def test_demo_trains_on_several_draws_of_the_same_facts_and_none_states_a_held_out_one():
    draws = DemoSettings().corpus_draws
    documents, _, held_out = demo_training_texts(draws=draws)
    single, _, _ = demo_training_texts()
    assert documents[: len(single)] == single  # the first draw is the one-draw text
    assert len(documents) > (draws - 1) * len(single)
    assert len(set(documents)) > 0.8 * len(documents)  # the draws group and order the facts differently
    joined = "\n".join(documents)
    assert not any(fact.filled in joined for fact in held_out)


def test_demo_run_evaluates_held_out_facts_and_saves_a_loadable_model(tmp_path):
    settings = DemoSettings(
        max_steps=12, batch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, progress_bar=False
    )
    result = run_demo(tmp_path, settings)
    _, train, held_out = demo_training_texts()
    assert sum(total for _, total in result.per_kind.values()) == len(held_out) == len(result.examples)
    assert result.exact_match == sum(fill == answer for _, answer, fill in result.examples) / len(held_out)
    assert result.baseline == corpus.frequency_baseline(train, held_out)
    assert [prompt for prompt, _ in result.generations] == [
        "The capital of Italy is Rome. [gMASK]",
        "法国的首都是巴黎。[gMASK]",
    ]

    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    assert isinstance(model, GLMForConditionalGeneration)
    assert (
        AutoTokenizer.from_pretrained(tmp_path).get_vocab()
        == GLMTokenizer.from_pretrained(DEMO_TOKENIZER_DIR).get_vocab()
    )
    card = ModelCard.load(tmp_path / "README.md")
    assert f"exact match **{result.exact_match:.3f}**" in card.text
    assert (tmp_path / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_demo_command_prints_fills_generation_and_scores(tmp_path, capsys):
    sizes = ["--hidden-size", "32", "--num-layers", "1", "--num-heads", "2", "--batch-size", "8"]
    main(["demo", "--output", str(tmp_path), "--max-steps", "6", "--show", "3", *sizes])
    printed = capsys.readouterr().out
    assert printed.count("->") == 3 + 2
    assert "held-out exact match" in printed and "frequency baseline" in printed


def test_demo_saves_the_trained_model_before_evaluating_it(tmp_path, monkeypatch):
    """An evaluation failure after minutes of training leaves a usable model and says where it is."""

    def broken_fill_blanks(*args, **kwargs):
        raise RuntimeError("generation broke")

    monkeypatch.setattr(demo, "fill_blanks", broken_fill_blanks)
    sizes = ["--hidden-size", "32", "--num-layers", "1", "--num-heads", "2", "--batch-size", "8"]
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--output", str(tmp_path), "--max-steps", "4", *sizes])
    message = str(exit_info.value)
    assert "model and tokenizer are saved in" in message and str(tmp_path) in message and "generation broke" in message
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(model, GLMForConditionalGeneration) and isinstance(tokenizer, GLMTokenizer)
