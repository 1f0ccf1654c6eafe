"""Seq2seq fine-tuning: the collator's layout, generate() on training batches, Seq2SeqTrainer with metrics."""

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import EvalPrediction, Seq2SeqTrainer, Seq2SeqTrainingArguments

from glm_hf import GLMForConditionalGeneration, GLMTokenizer
from glm_hf.training.seq2seq import DataCollatorForGLMSeq2Seq, Seq2SeqMetrics, token_f1
from tests.helpers.paths import THUDM_VOCAB
from tests.helpers.tiny import tiny_config

PAIRS = [
    ("France", "法国"),
    ("Japan", "日本"),
    ("China", "中国"),
    ("Italy", "意大利"),
]


@pytest.fixture(scope="module")
def tokenizer() -> GLMTokenizer:
    texts = [f"{en} {zh}" for en, zh in PAIRS] * 20 + ["Translate to Chinese:"] * 20
    return GLMTokenizer.train_bpe(texts, vocab_size=300)


def examples() -> list[dict]:
    return [{"source": f"Translate to Chinese: {en}", "target": zh} for en, zh in PAIRS]


def model_for(tokenizer: GLMTokenizer) -> GLMForConditionalGeneration:
    torch.manual_seed(0)
    config = tiny_config(vocab_size=len(tokenizer), hidden_size=64)
    return GLMForConditionalGeneration(config)


def test_collator_puts_the_source_in_part_a_and_the_target_in_part_b(tokenizer):
    batch = DataCollatorForGLMSeq2Seq(tokenizer)(examples()[:2] + [{"source": "[MASK] is 日本", "target": "Japan"}])
    for row, example in enumerate(examples()[:2]):
        sep = int(batch["attention_mask"][row])
        source = tokenizer(example["source"])["input_ids"] + [tokenizer.gmask_token_id]
        assert batch["input_ids"][row, :sep].tolist() == source
        labels = batch["labels"][row][batch["labels"][row] != -100].tolist()
        assert labels == tokenizer(example["target"], add_special_tokens=False)["input_ids"] + [tokenizer.eop_token_id]
        assert batch["input_ids"][row, sep] == tokenizer.sop_token_id
    sep = int(batch["attention_mask"][2])
    assert tokenizer.gmask_token_id not in batch["input_ids"][2, :sep].tolist()  # a source with a blank keeps it
    with pytest.raises(ValueError, match="max_source_length=3"):
        DataCollatorForGLMSeq2Seq(tokenizer, max_source_length=3)(examples())
    with pytest.raises(ValueError, match="'source' and 'target'"):
        DataCollatorForGLMSeq2Seq(tokenizer)([{"text": "x"}])


def test_generate_on_a_training_batch_generates_from_the_sources(tokenizer):
    model = model_for(tokenizer).eval()
    batch = DataCollatorForGLMSeq2Seq(tokenizer)(examples())
    from_batch = model.generate(**batch, max_new_tokens=5, do_sample=False)
    prompts = tokenizer([e["source"] + "[gMASK]" for e in examples()], padding=True, return_tensors="pt")
    from_prompts = model.generate(**prompts, max_new_tokens=5, do_sample=False)
    assert from_batch.tolist() == from_prompts.tolist()


def test_seq2seq_trainer_learns_and_reports_generation_metrics(tokenizer, tmp_path):
    model = model_for(tokenizer)
    data = Dataset.from_list(examples())
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path),
        max_steps=80,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        learning_rate=5e-3,
        predict_with_generate=True,
        generation_max_length=24,
        remove_unused_columns=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
    )
    trainer = Seq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=data,
        eval_dataset=data,
        data_collator=DataCollatorForGLMSeq2Seq(tokenizer),
        processing_class=tokenizer,
        compute_metrics=Seq2SeqMetrics(tokenizer),
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert before["eval_exact_match"] < 0.5
    assert after["eval_exact_match"] == 1.0 and after["eval_token_f1"] == 1.0


def test_metrics_read_fills_and_references(tokenizer):
    sop, eop, pad = tokenizer.sop_token_id, tokenizer.eop_token_id, tokenizer.pad_token_id
    fill = tokenizer("法国", add_special_tokens=False)["input_ids"]
    other = tokenizer("日本", add_special_tokens=False)["input_ids"]
    width = 12
    predictions = np.full((2, width), pad)
    predictions[0, : 3 + len(fill)] = [9, 10, sop, *fill]
    predictions[0, 3 + len(fill)] = eop
    predictions[1, : 3 + len(other)] = [9, 10, sop, *other]
    labels = np.full((2, width), -100)
    labels[:, 3 : 4 + len(fill)] = [*fill, eop]
    scores = Seq2SeqMetrics(tokenizer)(EvalPrediction(predictions=predictions, label_ids=labels))
    assert scores == {"exact_match": 0.5, "token_f1": 0.5}
    assert token_f1("the capital is Paris", "Paris is the capital") == 1.0
    assert token_f1("法国", "法国人") == pytest.approx(0.8)


def test_sources_follow_thudm_layouts_with_wrapping_tokenizers():
    vocab = THUDM_VOCAB
    if not vocab.is_dir():
        pytest.skip("THUDM vocabulary fixtures (../shared) not present")
    from glm_hf.convert.vocab import gpt2_tokenizer

    tokenizer = gpt2_tokenizer(str(vocab / "gpt2-vocab.json"), str(vocab / "gpt2-merges.txt"))
    batch = DataCollatorForGLMSeq2Seq(tokenizer)([{"source": "Hello world", "target": " Bye"}])
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    assert tokens == ["[CLS]", "Hello", "Ġworld", "[gMASK]", "<|endoftext|>", "<|startofpiece|>", "ĠBye"]
    assert int(batch["attention_mask"][0]) == 5
