"""GLM pipelines: fill-blank, cloze-classification, and text-generation with plain prompts and streaming."""

from threading import Thread

import pytest
import torch
from transformers import TextIteratorStreamer, pipeline

from glm_hf import GLMForConditionalGeneration, GLMForMultipleChoice, GLMTokenizer
from tests.helpers.tiny import tiny_config

TEXTS = ["The capital of France is Paris.", "Tokyo is the capital of Japan.", "北京是中国的首都。"] * 30


@pytest.fixture(scope="module")
def tokenizer() -> GLMTokenizer:
    return GLMTokenizer.train_bpe(TEXTS, vocab_size=300)


@pytest.fixture(scope="module")
def model(tokenizer) -> GLMForConditionalGeneration:
    torch.manual_seed(0)
    config = tiny_config(vocab_size=len(tokenizer), initializer_range=0.3)
    return GLMForConditionalGeneration(config).eval()


def sequential_fills(model, tokenizer, text: str, **generate_kwargs) -> tuple[list[int], list[list[int]]]:
    """Blanks filled one after another by hand: generate, cut at <eop>, splice into the blank, repeat."""
    ids = tokenizer(text)["input_ids"]
    fills = []
    while set(ids) & set(tokenizer.mask_token_ids):
        blank = next(i for i, t in enumerate(ids) if t in tokenizer.mask_token_ids)
        out = model.generate(torch.tensor([ids]), **generate_kwargs)[0, len(ids) + 1 :].tolist()
        fill = out[: out.index(tokenizer.eop_token_id)] if tokenizer.eop_token_id in out else out
        fills.append(fill)
        ids = ids[:blank] + fill + ids[blank + 1 :]
    return ids, fills


@pytest.mark.parametrize("options", [{"do_sample": False}, {"num_beams": 2, "do_sample": False}])
def test_fill_blank_fills_every_blank_left_to_right(model, tokenizer, options):
    fill_blank = pipeline("fill-blank", model=model, tokenizer=tokenizer)
    text = "[MASK] is the capital of [MASK]. 北京是[sMASK]"
    result = fill_blank(text, max_new_tokens=4, **options)
    ids, fills = sequential_fills(model, tokenizer, text, max_new_tokens=4, **options)
    assert len(result["fills"]) == 3 == len(result["finished"])
    assert result["fills"] == [tokenizer.decode(f, skip_special_tokens=True) for f in fills]
    assert result["filled_text"] == tokenizer.decode(ids, skip_special_tokens=True)
    batched = fill_blank([text, "Tokyo is the capital of [MASK]."], max_new_tokens=4, **options)
    assert batched[0] == result and len(batched[1]["fills"]) == 1


def test_fill_blank_reports_bad_input(model, tokenizer):
    fill_blank = pipeline("fill-blank", model=model, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="No blank to fill"):
        fill_blank("Tokyo is the capital of Japan.")
    with pytest.raises(ValueError, match="max_position_embeddings"):
        fill_blank("Tokyo " * 80 + "[MASK]")
    with pytest.raises(ValueError, match="GLMForConditionalGeneration"):
        pipeline("fill-blank", model=GLMForMultipleChoice(model.config), tokenizer=tokenizer)


def test_cloze_classification_ranks_labels_by_blank_probability(model, tokenizer):
    classify = pipeline("cloze-classification", model=model, tokenizer=tokenizer)
    result = classify("The capital of France is [MASK].", candidate_labels=["Paris", "Tokyo", "北京"])
    assert sorted(result["labels"]) == ["Paris", "Tokyo", "北京"]
    assert sum(result["scores"]) == pytest.approx(1.0) and result["scores"] == sorted(result["scores"], reverse=True)
    scorer = GLMForMultipleChoice(model.config)
    scorer.load_state_dict(model.state_dict())
    batch = tokenizer.build_inputs_for_multiple_choice(
        tokenizer(["The capital of France is [MASK]."]), [[" Paris", " Tokyo", " 北京"]]
    )
    with torch.no_grad():
        expected = scorer.eval()(**batch).logits[0].softmax(-1)
    by_label = dict(zip(result["labels"], result["scores"], strict=True))
    assert [by_label[label] for label in ("Paris", "Tokyo", "北京")] == pytest.approx(expected.tolist(), abs=1e-5)
    patterned = classify("Paris", candidate_labels="France, Japan", pattern="{text} is the capital of [MASK].")
    assert patterned["sequence"] == "Paris is the capital of [MASK]." and len(patterned["labels"]) == 2
    with pytest.raises(ValueError, match="candidate_labels"):
        classify("The capital of France is [MASK].")
    with pytest.raises(ValueError, match="No blank"):
        classify("Paris", candidate_labels=["a", "b"])


def test_text_generation_continues_plain_prompts_and_streams(model, tokenizer):
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    prompt = "The capital of France"
    full = generator(prompt, max_new_tokens=5, do_sample=False)[0]["generated_text"]
    new = generator(prompt, max_new_tokens=5, do_sample=False, return_full_text=False)[0]["generated_text"]
    expected = model.generate(**tokenizer([prompt], return_tensors="pt"), max_new_tokens=5, do_sample=False)
    continuation = tokenizer.decode(expected[0, len(tokenizer(prompt)["input_ids"]) :], skip_special_tokens=True)
    assert new == continuation and full == prompt + continuation

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    inputs = tokenizer([prompt], return_tensors="pt")
    options = {"max_new_tokens": 5, "do_sample": False, "streamer": streamer}
    thread = Thread(target=model.generate, kwargs={**inputs, **options})
    thread.start()
    streamed = "".join(streamer)
    thread.join()
    assert streamed == continuation


@pytest.mark.parametrize("forced", ["[sMASK]", "<|startofpiece|>", "<pad>"])
def test_fill_blank_fills_hold_only_text(model, tokenizer, forced):
    """A fill is text up to the span's end: a generated blank is not filled in turn, a span marker or padding is not
    pasted into the text (padding ends the fill, as end-of-piece does)."""
    fill_blank = pipeline("fill-blank", model=model, tokenizer=tokenizer)
    bias = {(tokenizer.convert_tokens_to_ids(forced),): 100.0}
    result = fill_blank("[MASK] is the capital of [MASK].", max_new_tokens=3, sequence_bias=bias)
    assert result["fills"] == ["", ""] and result["filled_text"] == tokenizer.decode(
        tokenizer(" is the capital of.")["input_ids"]
    )
    assert result["finished"] == [forced == "<pad>"] * 2


def test_fill_blank_returns_num_return_sequences_fills_per_text(model, tokenizer):
    """As text generation does: k results per text. Result i fills the first blank with generate()'s i-th sequence,
    then each later blank with one fill."""
    fill_blank = pipeline("fill-blank", model=model, tokenizer=tokenizer)
    text = "[MASK] is the capital of [MASK]."
    options = {"max_new_tokens": 3, "num_beams": 3, "do_sample": False}
    results = fill_blank(text, num_return_sequences=3, **options)
    ids = tokenizer(text)["input_ids"]
    firsts = model.generate(torch.tensor([ids]), num_return_sequences=3, **options)[:, len(ids) + 1 :].tolist()
    assert len(results) == 3
    for result, first in zip(results, firsts, strict=True):
        first = first[: first.index(tokenizer.eop_token_id)] if tokenizer.eop_token_id in first else first
        first = [token for token in first if token not in tokenizer.all_special_ids]
        after_first = first + ids[1:]  # the first blank is the text's first token
        second = model.generate(torch.tensor([after_first]), **options)[0, len(after_first) + 1 :].tolist()
        second = second[: second.index(tokenizer.eop_token_id)] if tokenizer.eop_token_id in second else second
        assert result["fills"] == [tokenizer.decode(fill, skip_special_tokens=True) for fill in (first, second)]
    assert results[0] == fill_blank(text, **options)  # the best sequence is the single answer
    sampled = fill_blank(
        [text, "Tokyo is the capital of [MASK]."], num_return_sequences=2, do_sample=True, max_new_tokens=3
    )
    assert [len(per_text) for per_text in sampled] == [2, 2] and len(sampled[0][1]["fills"]) == 2


def test_cloze_classification_refuses_bad_candidate_labels(model, tokenizer):
    classify = pipeline("cloze-classification", model=model, tokenizer=tokenizer)
    text = "The capital of France is [MASK]."
    for labels, message in (
        (["Paris", ""], "empty labels"),
        (["Paris", "  "], "empty labels"),
        ("Paris, ", "empty labels"),
        (["Paris", "Tokyo", "Paris"], "repeats \\['Paris'\\]"),
        ([], "needs candidate_labels"),
        (["Paris", 3], "must be strings"),
    ):
        with pytest.raises(ValueError, match=message):
            classify(text, candidate_labels=labels)


@pytest.mark.parametrize("pattern", ["{sentence} It was [MASK].", "{text} {other} [MASK]", "{text [MASK]"])
def test_cloze_classification_names_a_bad_pattern(model, tokenizer, pattern):
    classify = pipeline("cloze-classification", model=model, tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"The pattern .* must contain \{text\} exactly once") as error:
        classify("Paris", candidate_labels=["France", "Japan"], pattern=pattern)
    assert repr(pattern) in str(error.value)


def test_fill_blank_says_what_is_wrong_with_span_markers_and_empty_input(model, tokenizer):
    fill_blank = pipeline("fill-blank", model=model, tokenizer=tokenizer)
    classify = pipeline("cloze-classification", model=model, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="holds <\\|startofpiece\\|>, GLM's span markers"):
        fill_blank("Paris <|startofpiece|> is the capital of [MASK].")
    for run in (fill_blank, lambda texts: classify(texts, candidate_labels=["a", "b"])):
        with pytest.raises(ValueError, match="empty list of texts"):
            run([])
        with pytest.raises(ValueError, match="empty text"):
            run("  ")
        with pytest.raises(ValueError, match="empty text"):
            run(["Paris is [MASK].", ""])


def test_split_special_tokens_is_the_pipelines_plain_text_option(model, tokenizer):
    """The tokenizer's name for plain text is accepted (before: generate() refused it as an unused model kwarg)."""
    fill_blank = pipeline("fill-blank", model=model, tokenizer=tokenizer)
    text = "The capital of [MASK] is"
    plain = fill_blank(text, plain_text=True, max_new_tokens=3, do_sample=False)
    assert fill_blank(text, split_special_tokens=True, max_new_tokens=3, do_sample=False) == plain
    assert plain["filled_text"].startswith(text)
    classify = pipeline("cloze-classification", model=model, tokenizer=tokenizer)
    options = {"candidate_labels": ["France", "Japan"], "pattern": "{text} is in [MASK]."}
    assert classify("Paris [MASK]", split_special_tokens=True, **options) == classify("Paris [MASK]", **options)
    with pytest.raises(ValueError, match="plain_text=False and split_special_tokens=True, which are the same option"):
        fill_blank(text, plain_text=False, split_special_tokens=True)
