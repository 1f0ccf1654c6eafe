"""GLMTokenizer: special tokens, blanks in text, round trips, padding/truncation, builders, training, save/load."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from glm_hf import GLMTokenizer
from tests.helpers.tiny import tiny_model

CORPUS = [
    "The capital of France is Paris. The capital of Japan is Tokyo.",
    "中国的首都是北京。日本的首都是东京！你好，世界？",
    "Numbers: 1 2 3, tabs\tand  double spaces\nand new lines.",
    "GLM fills blanks autoregressively; 它逐个生成空白中的词。",
] * 50


@pytest.fixture(scope="module")
def tokenizer() -> GLMTokenizer:
    return GLMTokenizer.train_bpe(CORPUS, vocab_size=600)


def test_special_tokens_have_stable_ids_and_properties(tokenizer):
    names = ["pad", "unk", "cls", "eos", "mask", "smask", "gmask", "sop", "eop"]
    assert [getattr(tokenizer, f"{name}_token_id") for name in names] == list(range(9))
    assert tokenizer.mask_token_ids == [4, 5, 6]
    assert (tokenizer.sop_token, tokenizer.eop_token) == ("<|startofpiece|>", "<|endofpiece|>")
    assert tokenizer.convert_tokens_to_ids(["[MASK]", "[sMASK]", "[gMASK]"]) == [4, 5, 6]


def test_literal_blanks_become_blank_tokens_unless_split(tokenizer):
    ids = tokenizer("Paris is [MASK]. 北京是[sMASK]。Go on: [gMASK]")["input_ids"]
    assert [i for i in ids if i in (4, 5, 6)] == [4, 5, 6]
    untrusted = tokenizer("Paris is [MASK].", split_special_tokens=True)["input_ids"]
    assert not set(untrusted) & {4, 5, 6}
    assert tokenizer.decode(untrusted) == "Paris is [MASK]."


@pytest.mark.parametrize(
    "text",
    [
        "The capital of France is Paris.",
        "  leading and trailing spaces  ",
        "tabs\tnew\nlines\r\nand   runs of spaces",
        "中国的首都是北京。日本的首都是东京！",
        "混合 mixed 文本，with「引号」and emoji 🎉.",
    ],
)
def test_decode_encode_round_trip(tokenizer, text):
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_blanks_absorb_the_space_on_their_left(tokenizer):
    ids = tokenizer("Tsinghua is [MASK] in Beijing. 清华大学位于 [gMASK]")["input_ids"]
    assert tokenizer.decode(ids) == "Tsinghua is[MASK] in Beijing. 清华大学位于[gMASK]"
    span = tokenizer(" Beijing", add_special_tokens=False)["input_ids"]
    filled = tokenizer.decode(ids[: ids.index(tokenizer.mask_token_id)] + span)
    assert filled == "Tsinghua is Beijing"


def test_batches_pad_left_for_generation(tokenizer):
    batch = tokenizer(["a [MASK] b", "a much longer prompt [MASK] here"], padding=True, return_tensors="pt")
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1
    assert batch["input_ids"][0, 0] == tokenizer.pad_token_id


def test_truncation_that_would_drop_a_blank_raises(tokenizer):
    text = "one two three four five six seven eight [MASK]"
    with pytest.raises(ValueError, match="remove 1 of the 1 blanks"):
        tokenizer(text, truncation=True, max_length=4)
    tokenizer.truncation_side = "left"
    try:
        kept = tokenizer(text, truncation=True, max_length=4)["input_ids"]
    finally:
        tokenizer.truncation_side = "right"
    assert kept[-1] == tokenizer.mask_token_id and len(kept) == 4


def test_generation_inputs_fill_the_blank_with_the_model(tokenizer):
    prompts = tokenizer(["Paris is [MASK].", "北京是中国的[MASK]。"], padding=True, return_tensors="pt")
    inputs = tokenizer.build_inputs_for_generation(prompts)
    assert (inputs["input_ids"][:, -1] == tokenizer.sop_token_id).all()
    model = tiny_model(vocab_size=len(tokenizer), initializer_range=0.3, tie_word_embeddings=False)
    from_builder = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    from_prompts = model.generate(**prompts, max_new_tokens=4, do_sample=False)
    assert from_builder.tolist() == from_prompts.tolist()


def test_training_inputs_align_targets_with_the_span(tokenizer):
    prompts = tokenizer(["Paris is [MASK].", "The capital of Japan is [MASK]!"])
    batch = tokenizer.build_inputs_for_generation(prompts, targets=["the capital", "Tokyo"], max_gen_length=8)
    target_ids = tokenizer(["the capital", "Tokyo"], add_special_tokens=False)["input_ids"]
    for row, target in enumerate(target_ids):
        labelled = batch["labels"][row][batch["labels"][row] != -100].tolist()
        assert labelled == target + [tokenizer.eop_token_id]
        sop = (batch["input_ids"][row] == tokenizer.sop_token_id).nonzero()[0, 0]
        assert batch["input_ids"][row, sop + 1 : sop + 1 + len(target)].tolist() == target
        blank = (batch["input_ids"][row] == tokenizer.mask_token_id).nonzero()[0, 0]
        blank_position = batch["position_ids"][row, 0, blank]
        assert (batch["position_ids"][row, 0, sop : sop + len(target) + 1] == blank_position).all()
    model = tiny_model(vocab_size=len(tokenizer)).train()
    assert torch.isfinite(model(**batch).loss)
    padded = tokenizer.build_inputs_for_generation(prompts, targets=["a", "b"], max_gen_length=8, padding=True)
    sep = int((padded["input_ids"][0] == tokenizer.sop_token_id).nonzero()[0, 0])
    assert padded["input_ids"].shape[1] == sep + 8
    with pytest.raises(ValueError, match="max_gen_length=2"):
        tokenizer.build_inputs_for_generation(prompts, targets=["a b c d", "e"], max_gen_length=2)


def test_targets_holding_blanks_or_span_markers_are_refused_or_read_as_text(tokenizer):
    """A `[MASK]` in a target was trained as a label, an `<|endofpiece|>` ended the span in its middle."""
    prompts = tokenizer(["Paris is [MASK].", "Tokyo is [MASK]."])
    for target, name in (("a [MASK] b", r"\[MASK\]"), ("a <|endofpiece|> b", r"<\|endofpiece\|>")):
        with pytest.raises(ValueError, match=f"target 1 holds {name}.*plain_text=True"):
            tokenizer.build_inputs_for_generation(prompts, targets=["ok", target], max_gen_length=32)
        batch = tokenizer.build_inputs_for_generation(prompts, targets=["ok", target], plain_text=True)
        labelled = batch["labels"][1][batch["labels"][1] != -100].tolist()
        assert tokenizer.decode(labelled[:-1]) == target and labelled[-1] == tokenizer.eop_token_id


def test_multiple_choice_inputs_score_each_choice_as_if_alone(tokenizer):
    prompt = tokenizer(["Paris is in [MASK]."])
    choices = [["France", "Japan and more"]]
    batch = tokenizer.build_inputs_for_multiple_choice(prompt, choices)
    model = tiny_model(vocab_size=len(tokenizer), initializer_range=0.3)
    logits = model(
        batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
    ).logits.log_softmax(-1)
    for k, choice in enumerate(choices[0]):
        alone = tokenizer.build_inputs_for_generation(prompt, targets=[choice], max_gen_length=16)
        alone_logits = model(**{n: v for n, v in alone.items() if n != "labels"}).logits.log_softmax(-1)
        alone_score = alone_logits[alone["labels"] != -100][:-1].gather(
            -1, alone["labels"][alone["labels"] != -100][:-1, None]
        )
        picked = batch["choice_index"][0] == k
        together = logits[0, picked].gather(-1, batch["choice_labels"][0, picked][:, None])
        torch.testing.assert_close(together, alone_score, atol=1e-5, rtol=1e-5)


def test_save_and_auto_load_round_trip(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(loaded) is GLMTokenizer
    text = "Tsinghua is [MASK] in  Beijing.\n清华大学在[gMASK]"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.mask_token_ids == [4, 5, 6] and loaded.eop_token_id == 8
    assert loaded.padding_side == "left"


def test_train_new_from_iterator_keeps_the_glm_layout(tokenizer):
    retrained = tokenizer.train_new_from_iterator(iter(CORPUS), vocab_size=400)
    assert isinstance(retrained, GLMTokenizer)
    assert retrained.mask_token_ids == [4, 5, 6] and retrained.sop_token_id == 7
    assert retrained.decode(retrained("北京 [MASK] Paris")["input_ids"]) == "北京[MASK] Paris"


def test_trained_tokens_never_join_chinese_characters():
    repeated = GLMTokenizer.train_bpe(["法国的首都是巴黎。"] * 200 + ["The capital is Paris."] * 200, vocab_size=400)
    assert repeated.tokenize("法国的首都是巴黎。") and all(
        len(repeated.convert_tokens_to_string([token]).strip()) <= 1
        for token in repeated.tokenize("法国的首都是巴黎。")
    )
    assert "ĠParis" in repeated.get_vocab()
    blank = repeated("法国的首都是[MASK]。")["input_ids"]
    filled = repeated("法国的首都是巴黎。")["input_ids"]
    assert blank[:6] == filled[:6] and blank[-1] == filled[-1]


def test_from_backend_requires_the_special_tokens_in_the_vocabulary():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    with pytest.raises(ValueError, match="no id for the special tokens"):
        GLMTokenizer.from_backend(Tokenizer(WordLevel({"<pad>": 0, "<unk>": 1}, unk_token="<unk>")))


@settings(max_examples=200, deadline=None)
@given(
    st.text(
        alphabet=st.one_of(
            st.characters(codec="utf-8", exclude_categories=("Cs",)),
            st.sampled_from(list("北京是中国的首都。，！？「」 \t\n")),
        ),
        max_size=60,
    )
)
def test_round_trip_property(tokenizer, text):
    assert tokenizer.decode(tokenizer(text, split_special_tokens=True)["input_ids"]) == text


def test_multiple_choice_batches_pad_without_changing_scores(tokenizer):
    prompts = tokenizer(["Paris is in [MASK].", "北京是中国的[MASK]，东京是日本的首都。"])
    choices = [["France", "Japan and more"], ["首都", "城市", "国家"]]
    model = tiny_model(vocab_size=len(tokenizer), initializer_range=0.3)
    together = tokenizer.build_inputs_for_multiple_choice(prompts, choices)
    for row in range(2):
        alone = tokenizer.build_inputs_for_multiple_choice({"input_ids": [prompts["input_ids"][row]]}, [choices[row]])
        n = alone["input_ids"].shape[1]
        inputs = ("input_ids", "attention_mask", "position_ids")
        batch_logits = model(**{k: together[k] for k in inputs}).logits[row, :n]
        alone_logits = model(**{k: alone[k] for k in inputs}).logits[0]
        torch.testing.assert_close(batch_logits, alone_logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("texts", "named"),
    [(["Paris", None], r"text\[1\] is NoneType \(None\)"), ([5, "Paris"], r"text\[0\] is int \(5\)")],
)
def test_a_batch_item_that_is_not_a_string_is_named(tokenizer, texts, named):
    with pytest.raises(TypeError, match=named + ", not a string: pass a string or a list of strings"):
        tokenizer(texts)
    with pytest.raises(TypeError, match=named.replace("text", "text_pair")):
        tokenizer(["a", "b"], texts)
    assert tokenizer([("Paris", "France")])["input_ids"] == [tokenizer("Paris", "France")["input_ids"]]  # pairs


def test_a_lone_surrogate_is_refused_with_its_position(tokenizer):
    with pytest.raises(ValueError, match=r"text holds a lone surrogate \(U\+D800\) at character 0"):
        tokenizer("\ud800")
    with pytest.raises(ValueError, match=r"text\[1\] holds a lone surrogate \(U\+DC80\) at character 6"):
        tokenizer(["Paris", "Tokyo \udc80 Japan"], split_special_tokens=True)


def test_decode_refuses_ids_outside_the_vocabulary(tokenizer):
    last = len(tokenizer) - 1
    with pytest.raises(ValueError, match=rf"Cannot decode ids -1, 99999: this tokenizer's ids are 0\.\.{last}\."):
        tokenizer.decode([5, 99999, -1])
    with pytest.raises(ValueError, match="Cannot decode ids 99999"):
        tokenizer.decode([99999])
    with pytest.raises(ValueError, match="-100 marks ignored label positions"):
        tokenizer.decode([20, -100, -100], skip_special_tokens=True)
    with pytest.raises(ValueError, match=f"Cannot decode ids {2**32}"):
        tokenizer.decode([20, 2**32], skip_special_tokens=True)
    # Generation output: a model with more embedding rows than tokens can generate an id past the tokenizer,
    # which is no text; skipped with the special tokens, as before.
    text = tokenizer("Paris", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode([*text, last + 1, tokenizer.eop_token_id], skip_special_tokens=True) == "Paris"
    assert tokenizer.decode([last]).strip()  # the last id is in the vocabulary
