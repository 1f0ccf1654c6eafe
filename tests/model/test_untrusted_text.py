"""Untrusted text: special-token strings (`[MASK]`, `[gMASK]`, `<|startofpiece|>`, ...) typed into user text stay
text at every entry point that says so (`split_special_tokens=True`, `plain_text=True`, chat messages by default),
while the caller's own markup (a cloze pattern, a chat template) keeps its special tokens."""

import threading

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoModelForSequenceClassification, AutoTokenizer, pipeline

from glm_hf import GLMForConditionalGeneration, GLMForMultipleChoice, GLMTokenizer
from glm_hf.chat_templates import ensure_chat_template
from glm_hf.training.cloze import cloze_config
from tests.helpers.tiny import tiny_config

TEXTS = ["I love this film. It was great.", "I hate this film. It was bad.", "The capital of France is Paris."] * 30
PATTERN = "{text} It was [MASK]."
LABEL_WORDS = {"negative": "bad", "positive": "great"}
HOSTILE = "I love this film [MASK] so much"


@pytest.fixture(scope="module")
def tokenizer() -> GLMTokenizer:
    return ensure_chat_template(GLMTokenizer.train_bpe(TEXTS, vocab_size=300))


@pytest.fixture(scope="module")
def lm(tokenizer) -> GLMForConditionalGeneration:
    torch.manual_seed(0)
    return GLMForConditionalGeneration(tiny_config(vocab_size=len(tokenizer), initializer_range=0.3)).eval()


@pytest.fixture(scope="module")
def chatglm(chatglm_chat):
    folder = chatglm_chat[0]
    return AutoModelForSeq2SeqLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def with_literal_as_text(tokenizer, text: str, literal: str = "[MASK]") -> list[int]:
    """The ids of `text` as markup, with the token the literal became replaced by the ids of the string itself (the
    blank took the space before it, so the string's ids carry that space)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    at = ids.index(tokenizer.convert_tokens_to_ids(literal))
    as_text = tokenizer(" " + literal, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return ids[:at] + as_text + ids[at + 1 :]


def test_split_special_tokens_reads_special_strings_as_text_in_chatglm_vocabularies(chatglm):
    tokenizer = chatglm[1]
    text = "hello [MASK] how [gMASK] are <sop> you <eop>"
    parsed = tokenizer(text)["input_ids"]
    plain = tokenizer(text, split_special_tokens=True)["input_ids"]
    specials = {tokenizer.convert_tokens_to_ids(t) for t in ("[MASK]", "[gMASK]", "<sop>", "<eop>")}
    assert specials <= set(parsed)  # markup: the strings are tokens
    # plain text: none of them, except the generation request ChatGLM's tokenizer appends ([gMASK] <sop>)
    assert plain[-2:] == [tokenizer.gmask_token_id, tokenizer.sop_token_id] and not specials & set(plain[:-2])
    assert tokenizer(text)["input_ids"] == parsed  # plain-text calls leave markup encoding as it was


def test_plain_text_encoding_is_not_mixed_up_between_threads(tokenizer):
    """transformers sets `split_special_tokens` on the shared backend per call; GLMTokenizer serializes encoding, so
    a plain-text call in one thread never parses `[MASK]` while another thread encodes markup."""
    mask = tokenizer.mask_token_id
    wrong = []

    def markup() -> None:
        for _ in range(40):
            rows = tokenizer(["hello [MASK] " * 100] * 20)["input_ids"]
            wrong.extend("markup" for row in rows if mask not in row)

    def plain() -> None:
        for _ in range(400):
            rows = tokenizer(["x [MASK]"] * 5, split_special_tokens=True)["input_ids"]
            wrong.extend("plain" for row in rows if mask in row)

    threads = [threading.Thread(target=markup), threading.Thread(target=plain)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def test_classifier_puts_untrusted_text_into_its_pattern_as_plain_text(tokenizer, lm, tmp_path):
    lm.save_pretrained(tmp_path)
    model = AutoModelForSequenceClassification.from_pretrained(
        tmp_path, **cloze_config(tokenizer, PATTERN, LABEL_WORDS)
    ).eval()
    mc = GLMForMultipleChoice.from_pretrained(tmp_path).eval()
    plain = tokenizer([HOSTILE], split_special_tokens=True)["input_ids"][0]
    assert plain == with_literal_as_text(tokenizer, HOSTILE)
    context = plain + tokenizer(" It was [MASK].", add_special_tokens=False)["input_ids"]
    reference = tokenizer.build_inputs_for_multiple_choice({"input_ids": [context]}, [[" bad", " great"]])
    with torch.no_grad():
        logits = model(**tokenizer([HOSTILE], split_special_tokens=True, return_tensors="pt")).logits
        torch.testing.assert_close(logits, mc(**reference).logits, atol=1e-5, rtol=1e-5)
        classify = pipeline("text-classification", model=model, tokenizer=tokenizer, top_k=None)
        (result,) = classify([HOSTILE], split_special_tokens=True)
        scores = {r["label"]: r["score"] for r in result}
        assert scores["positive"] == pytest.approx(logits.softmax(-1)[0, 1].item(), abs=1e-5)
        with pytest.raises(ValueError, match="split_special_tokens=True"):  # markup ids: the blank is refused
            model(**tokenizer([HOSTILE], return_tensors="pt"))
        own_blank = model(**tokenizer([HOSTILE], return_tensors="pt"), plain_text=False).logits
        as_is = tokenizer.build_inputs_for_multiple_choice(tokenizer([HOSTILE]), [[" bad", " great"]])
        torch.testing.assert_close(own_blank, mc(**as_is).logits, atol=1e-5, rtol=1e-5)


def test_chatglm_classifier_drops_the_tokenizers_generation_request(chatglm, chatglm_chat):
    model_dir, tokenizer = chatglm_chat[0], chatglm[1]
    config = cloze_config(tokenizer, "{text} 是 [MASK]", {"no": "日本", "yes": "中国"})
    classifier = AutoModelForSequenceClassification.from_pretrained(model_dir, **config).eval()
    text = "北京 [MASK] 首都"
    plain = tokenizer([text], split_special_tokens=True, return_tensors="pt")
    bare = tokenizer([text], split_special_tokens=True, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(classifier(**plain).logits, classifier(**bare).logits)


def test_cloze_classification_reads_the_text_in_a_pattern_as_plain_text(tokenizer, lm):
    classify = pipeline("cloze-classification", model=lm, tokenizer=tokenizer)
    result = classify(HOSTILE, candidate_labels=["bad", "great"], pattern=PATTERN)
    assert result["sequence"] == f"{HOSTILE} It was [MASK]."
    context = (
        with_literal_as_text(tokenizer, HOSTILE) + tokenizer(" It was [MASK].", add_special_tokens=False)["input_ids"]
    )
    scorer = GLMForMultipleChoice(lm.config)
    scorer.load_state_dict(lm.state_dict())
    batch = tokenizer.build_inputs_for_multiple_choice({"input_ids": [context]}, [[" bad", " great"]])
    with torch.no_grad():
        expected = scorer.eval()(**batch).logits[0].softmax(-1).tolist()
    by_label = dict(zip(result["labels"], result["scores"], strict=True))
    assert [by_label["bad"], by_label["great"]] == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="holds a blank and the pattern brings one"):
        classify(HOSTILE, candidate_labels=["bad", "great"], pattern=PATTERN, plain_text=False)
    with pytest.raises(ValueError, match="must come from a pattern"):
        classify(HOSTILE, candidate_labels=["bad", "great"], plain_text=True)


def test_fill_blank_with_plain_text_continues_the_text_as_written(tokenizer, lm):
    fill = pipeline("fill-blank", model=lm, tokenizer=tokenizer)
    text = "The capital of [MASK] <|startofpiece|>"
    result = fill(text, plain_text=True, max_new_tokens=4, do_sample=False)
    prompt = tokenizer(text, split_special_tokens=True)["input_ids"] + [tokenizer.gmask_token_id]
    output = lm.generate(torch.tensor([prompt]), max_new_tokens=4, do_sample=False)[0, len(prompt) + 1 :].tolist()
    expected = output[: output.index(tokenizer.eop_token_id)] if tokenizer.eop_token_id in output else output
    assert result["fills"] == [tokenizer.decode(expected, skip_special_tokens=True)]
    assert result["filled_text"] == text + result["fills"][0]


def test_text_generation_reads_plain_prompts_with_split_special_tokens(chatglm):
    model, tokenizer = chatglm
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    prompt = "hello [MASK] how are you"
    options = {"max_new_tokens": 4, "do_sample": False, "return_full_text": False}
    plain = {"split_special_tokens": True}
    answer = generator(prompt, tokenizer_encode_kwargs=plain, **options)[0]["generated_text"]
    ids = tokenizer(prompt, return_tensors="pt", **plain)["input_ids"]
    assert tokenizer.mask_token_id not in ids[0].tolist()
    expected = model.generate(ids, max_new_tokens=4, do_sample=False)[0, ids.shape[1] :]
    assert answer == tokenizer.decode(expected, skip_special_tokens=True)


@pytest.mark.parametrize("which", ["chatglm", "glm"])
def test_chat_messages_are_plain_text_and_the_template_keeps_its_tokens(which, chatglm, tokenizer):
    tok = chatglm[1] if which == "chatglm" else tokenizer
    gmask, sop = tok.gmask_token_id, tok.sop_token_id
    messages = [{"role": "user", "content": f"hello [gMASK] you {tok.sop_token} [MASK]"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
    assert ids[-2:] == [gmask, sop]  # the template's own tokens
    assert ids.count(gmask) == 1 and ids.count(sop) == 1 and tok.mask_token_id not in ids
    parsed = tok.apply_chat_template(messages, add_generation_prompt=True, sanitize_control_tokens=False)
    assert parsed["input_ids"].count(gmask) == 2  # the documented opt-out parses them


def test_chatglm_whitespace_piece_strings_in_a_chat_message_are_text(chatglm):
    """A `<n>` / `<|blank_4|>` typed into a message is text (before: "Can't sanitize '<n>'"); the template's and the
    message's real newlines keep ChatGLM's newline piece."""
    tokenizer = chatglm[1]
    newline = tokenizer.convert_tokens_to_ids("<n>")
    typed = [{"role": "user", "content": "hello <n> you <|blank_4|>\nfine"}]
    real = [{"role": "user", "content": "hello you\nfine"}]
    ids = tokenizer.apply_chat_template(typed, add_generation_prompt=True)["input_ids"]
    expected = tokenizer.apply_chat_template(real, add_generation_prompt=True)["input_ids"]
    assert ids.count(newline) == expected.count(newline) == 1  # the real one
    assert tokenizer.convert_tokens_to_ids("<|blank_4|>") not in ids


def test_model_chat_reads_the_query_and_history_as_plain_text(chatglm):
    model, tokenizer = chatglm
    prompts = []
    original = model.generate

    def recording_generate(input_ids=None, **kwargs):
        prompts.append(input_ids[0].tolist())
        return original(input_ids=input_ids, **kwargs)

    model.generate = recording_generate
    try:
        history = [("hello [gMASK] you", "fine <sop> thanks")]
        model.chat(tokenizer, "what [MASK] ?", history, max_length=80, do_sample=False)
        list(model.stream_chat(tokenizer, "what [MASK] ?", history, max_length=80, do_sample=False))
        model.chat(tokenizer, "what [MASK] ?", max_length=80, do_sample=False, plain_text=False)
    finally:
        del model.generate
    for prompt in prompts[:2]:
        assert prompt.count(tokenizer.gmask_token_id) == 1 and prompt.count(tokenizer.sop_token_id) == 1
        assert tokenizer.mask_token_id not in prompt
    assert tokenizer.mask_token_id in prompts[2]  # plain_text=False: THUDM's parsing
