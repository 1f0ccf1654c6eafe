"""Cloze NLU heads: GLMForMultipleChoice and verbalizer-based GLMForSequenceClassification."""

import pytest
import torch
from datasets import Dataset
from transformers import (
    AutoModelForMultipleChoice,
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    pipeline,
)

from glm_hf import (
    GLMConfig,
    GLMForConditionalGeneration,
    GLMForMultipleChoice,
    GLMForSequenceClassification,
    GLMTokenizer,
)
from glm_hf.training.cloze import DataCollatorForClozeChoice, cloze_config
from tests.helpers.tiny import tiny_config

TEXTS = [
    "I love this film. It was great.",
    "I hate this film. It was bad.",
    "The capital of France is Paris.",
    "The capital of Japan is Tokyo.",
    "北京是中国的首都。",
] * 30
PATTERN = "{text} It was [MASK]."
LABEL_WORDS = {"negative": "bad", "positive": "great"}


@pytest.fixture(scope="module")
def tokenizer() -> GLMTokenizer:
    return GLMTokenizer.train_bpe(TEXTS, vocab_size=300)


def config(tokenizer: GLMTokenizer, **extra) -> GLMConfig:
    return tiny_config(vocab_size=len(tokenizer), initializer_range=0.3, **extra)


def manual_scores(lm: GLMForConditionalGeneration, batch: dict, row: int, scoring: str) -> torch.Tensor:
    """Per-choice scores from the language model's own logits on the same layout."""
    logits = lm(**{k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}).logits[row]
    log_probs = logits.log_softmax(-1)
    scores = []
    for k in range(int(batch["choice_index"][row].max()) + 1):
        picked = batch["choice_index"][row] == k
        token_scores = log_probs[picked].gather(-1, batch["choice_labels"][row, picked][:, None])
        scores.append(token_scores.mean() if scoring == "mean" else token_scores.sum())
    return torch.stack(scores)


@pytest.mark.parametrize("scoring", ["mean", "sum"])
def test_multiple_choice_scores_are_choice_log_probabilities(tokenizer, tmp_path, scoring):
    torch.manual_seed(0)
    lm = GLMForConditionalGeneration(config(tokenizer)).eval()
    lm.save_pretrained(tmp_path)
    model = AutoModelForMultipleChoice.from_pretrained(tmp_path, choice_scoring=scoring).eval()
    assert isinstance(model, GLMForMultipleChoice)
    collate = DataCollatorForClozeChoice(tokenizer)
    batch = collate(
        [
            {"context": "The capital of France is [MASK].", "choices": ["Paris", "Tokyo is big", "北京"], "label": 0},
            {"context": "北京是中国的[MASK]。", "choices": ["首都", "film"], "label": 1},
        ]
    )
    with torch.no_grad():
        output = model(**batch)
        torch.testing.assert_close(output.logits[0], manual_scores(lm, batch, 0, scoring), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(output.logits[1, :2], manual_scores(lm, batch, 1, scoring), atol=1e-5, rtol=1e-5)
    assert output.logits[1, 2] == float("-inf")  # the second example has two choices
    expected_loss = torch.nn.functional.cross_entropy(output.logits, batch["labels"])
    torch.testing.assert_close(output.loss, expected_loss)


def test_multiple_choice_checks_its_inputs(tokenizer):
    model = GLMForMultipleChoice(config(tokenizer))
    batch = DataCollatorForClozeChoice(tokenizer)([{"context": "It was [MASK].", "choices": ["great"]}])
    batch["choice_labels"][0, -1] = -100
    with pytest.raises(ValueError, match="label every choice position"):
        model(**batch)
    with pytest.raises(ValueError, match="keys"):
        DataCollatorForClozeChoice(tokenizer)([{"text": "no context"}])
    with pytest.raises(ValueError, match="choice_scoring"):
        config(tokenizer, choice_scoring="max")


def classifier(tokenizer: GLMTokenizer, path) -> GLMForSequenceClassification:
    torch.manual_seed(0)
    GLMForConditionalGeneration(config(tokenizer)).save_pretrained(path)
    return AutoModelForSequenceClassification.from_pretrained(path, **cloze_config(tokenizer, PATTERN, LABEL_WORDS))


def test_classifier_logits_are_verbalizer_scores_in_the_pattern(tokenizer, tmp_path):
    model = classifier(tokenizer, tmp_path).eval()
    assert isinstance(model, GLMForSequenceClassification) and model.config.id2label == {0: "negative", 1: "positive"}
    mc = AutoModelForMultipleChoice.from_pretrained(tmp_path).eval()
    text = "I love this film."
    with torch.no_grad():
        logits = model(**tokenizer([text], return_tensors="pt")).logits
        choices = DataCollatorForClozeChoice(tokenizer)(
            [{"context": f"{text} It was [MASK].", "choices": [" bad", " great"]}]
        )
        torch.testing.assert_close(logits, mc(**choices).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("texts", "plain_text"),
    [
        (["I love this film.", "I hate this film, it was long."], None),
        (["I love [MASK].", "It was [MASK], bad."], False),
    ],
)
def test_classifier_is_padding_invariant(tokenizer, tmp_path, texts, plain_text):
    model = classifier(tokenizer, tmp_path).eval()
    with torch.no_grad():
        alone = torch.cat([model(**tokenizer([t], return_tensors="pt"), plain_text=plain_text).logits for t in texts])
        for side in ("left", "right"):
            tokenizer.padding_side = side
            together = model(**tokenizer(texts, padding=True, return_tensors="pt"), plain_text=plain_text).logits
            torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
        tokenizer.padding_side = "left"


def test_classifier_always_applies_its_pattern_unless_told_the_text_holds_the_blank(tokenizer, tmp_path):
    model = classifier(tokenizer, tmp_path).eval()
    mc = AutoModelForMultipleChoice.from_pretrained(tmp_path).eval()
    text = "It was [MASK], I hate this film."
    with torch.no_grad():
        with pytest.raises(ValueError, match="put into the cloze pattern"):
            model(**tokenizer([text], return_tensors="pt"))  # a blank typed into the text cannot replace the pattern's
        as_is = model(**tokenizer([text], return_tensors="pt"), plain_text=False).logits
        choices = DataCollatorForClozeChoice(tokenizer)([{"context": text, "choices": [" bad", " great"]}])
        torch.testing.assert_close(as_is, mc(**choices).logits, atol=1e-5, rtol=1e-5)
    bare = AutoModelForSequenceClassification.from_pretrained(
        tmp_path, verbalizer_ids=[[9], [10]], id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1}
    )
    with pytest.raises(ValueError, match="the config has none"):
        bare(**tokenizer(["I love this film."], return_tensors="pt"), plain_text=True)


def test_text_classification_pipeline_gives_normalised_label_probabilities(tokenizer, tmp_path):
    model = classifier(tokenizer, tmp_path).eval()
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer, top_k=None)
    (result,) = classify(["I love this film."])
    assert sorted(r["label"] for r in result) == ["negative", "positive"]
    assert sum(r["score"] for r in result) == pytest.approx(1.0)
    with torch.no_grad():
        probabilities = model(**tokenizer(["I love this film."], return_tensors="pt")).logits.softmax(-1)[0]
    assert {r["label"]: r["score"] for r in result}["positive"] == pytest.approx(probabilities[1].item(), abs=1e-5)


def test_classifier_fine_tunes_with_the_stock_trainer(tokenizer, tmp_path):
    model = classifier(tokenizer, tmp_path / "base")
    rows = [("I love this film.", 1), ("I hate this film.", 0), ("I love Paris.", 1), ("I hate Tokyo.", 0)] * 8
    data = Dataset.from_dict({"text": [t for t, _ in rows], "label": [y for _, y in rows]})
    data = data.map(lambda batch: tokenizer(batch["text"]), batched=True, remove_columns=["text"])
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=30,
        per_device_train_batch_size=8,
        learning_rate=3e-3,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=5,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tokenizer))
    trainer.train()
    model.eval()
    with torch.no_grad():
        predictions = model(**tokenizer([t for t, _ in rows[:4]], padding=True, return_tensors="pt")).logits
    assert predictions.argmax(-1).tolist() == [1, 0, 1, 0]


def test_cloze_config_rejects_bad_patterns(tokenizer):
    with pytest.raises(ValueError, match="exactly once"):
        cloze_config(tokenizer, "It was [MASK].", LABEL_WORDS)
    for pattern in ("{sentence} It was [MASK].", "{text} {other} It was [MASK].", "{text:>9} It was [MASK]."):
        with pytest.raises(ValueError, match=r"must contain \{text\} exactly once and no other") as error:
            cloze_config(tokenizer, pattern, LABEL_WORDS)
        assert repr(pattern) in str(error.value)
    braces = cloze_config(tokenizer, "{{quote}} {text} It was [MASK].", LABEL_WORDS)  # literal braces are text
    assert braces["cloze_prefix_ids"] == tokenizer("{quote} ", add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match="exactly one blank"):
        cloze_config(tokenizer, "{text} It was great.", LABEL_WORDS)
    with pytest.raises(ValueError, match="verbalizer_ids"):
        GLMForSequenceClassification(config(tokenizer))
