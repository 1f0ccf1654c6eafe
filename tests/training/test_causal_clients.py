"""Real causal-LM clients on GLMForCausalLM: TRL's SFTTrainer and the stock causal recipe cannot make it predict
random tokens (a model that sees the next token can), TRL's packing trains it on padding-free rows, and lm-eval's hf
backend scores alike at any batch size."""

import math
import random

import pytest
import torch
from datasets import Dataset
from transformers import DataCollatorForLanguageModeling, DataCollatorWithFlattening, Trainer, TrainingArguments

from glm_hf import GLMForCausalLM, corpus
from tests.helpers.tiny import tiny_config, word_tokenizer

WORDS = [f"w{i}" for i in range(9, 60)]  # the ordinary tokens of `word_tokenizer`
CHANCE = math.log(len(WORDS))  # the best possible loss on uniformly random words


def random_texts(count: int, length: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(length)) for _ in range(count)]


def fresh_model() -> GLMForCausalLM:
    torch.manual_seed(0)
    return GLMForCausalLM(tiny_config(max_position_embeddings=64))


def training_options(output_dir) -> dict:
    """60 AdamW steps of 16 rows on the CPU, nothing saved or reported: enough to drive a leaking model's loss on
    random words far below chance."""
    return dict(
        output_dir=str(output_dir),
        max_steps=60,
        per_device_train_batch_size=16,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )


def eval_loss_on_new_random_text(model: GLMForCausalLM, tokenizer) -> float:
    """Mean next-token loss on random sequences never trained on."""
    batch = tokenizer(random_texts(64, 16, seed=99), return_tensors="pt")
    model.eval()
    with torch.no_grad():
        return float(model(**batch, labels=batch["input_ids"]).loss)


@pytest.mark.parametrize("data", ["text", "prompt_completion"])
def test_trl_sft_cannot_learn_random_tokens(tmp_path, data):
    from trl import SFTConfig, SFTTrainer

    tokenizer = word_tokenizer()
    tokenizer.padding_side = "right"
    texts = random_texts(256, 16, seed=0)
    if data == "text":
        dataset = Dataset.from_dict({"text": texts})
    else:
        dataset = Dataset.from_dict({"prompt": [t[:23] for t in texts], "completion": [t[23:] for t in texts]})
    args = SFTConfig(max_length=32, **training_options(tmp_path))
    trainer = SFTTrainer(model=fresh_model(), args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses, "TRL logged no training loss"
    assert eval_loss_on_new_random_text(trainer.model, tokenizer) > 0.9 * CHANCE


def test_stock_causal_recipe_cannot_learn_random_tokens(tmp_path):
    tokenizer = word_tokenizer()
    tokenizer.padding_side = "right"
    dataset = Dataset.from_dict(tokenizer(random_texts(256, 16, seed=0)))
    args = TrainingArguments(**training_options(tmp_path))
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    trainer = Trainer(model=fresh_model(), args=args, train_dataset=dataset, data_collator=collator)
    trainer.train()
    assert eval_loss_on_new_random_text(trainer.model, tokenizer) > 0.9 * CHANCE


def test_the_causal_recipe_learns_what_can_be_learned(tmp_path):
    """The other side of the two tests above: a sequence pattern (each word followed by the next word) is learned,
    so their high losses come from causality, not from a model that cannot train."""
    tokenizer = word_tokenizer()
    rng = random.Random(0)
    starts = [rng.randrange(len(WORDS) - 16) for _ in range(256)]
    dataset = Dataset.from_dict(tokenizer([" ".join(WORDS[s : s + 16]) for s in starts]))
    args = TrainingArguments(**training_options(tmp_path))
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    trainer = Trainer(model=fresh_model(), args=args, train_dataset=dataset, data_collator=collator)
    trainer.train()
    batch = tokenizer([" ".join(WORDS[s : s + 16]) for s in (3, 17, 30)], return_tensors="pt")
    trainer.model.eval()
    with torch.no_grad():
        assert float(trainer.model(**batch, labels=batch["input_ids"]).loss) < 0.2 * CHANCE


def test_trl_fused_lm_head_scores_as_the_causal_head():
    """TRL's SFTTrainer computes its loss from the model's backbone (`model.base_model`) and a fused LM head, not from
    the model's forward: the backbone reads plain text left to right too (`GLMLeftToRightModel`), so TRL trains the
    causal head's own loss, on padded and on packed rows."""
    from trl.trainer.utils import add_fused_lm_head

    model = fresh_model().eval()
    tokenizer = word_tokenizer()
    tokenizer.padding_side = "right"
    texts = random_texts(3, 9, seed=1)
    padded = tokenizer(texts, return_tensors="pt", padding=True)
    packed = DataCollatorWithFlattening()([{"input_ids": ids} for ids in tokenizer(texts)["input_ids"]])
    with torch.no_grad():
        expected = [model(**padded, labels=padded["input_ids"]).loss, model(**packed).loss]
        add_fused_lm_head(model)
        fused = [model(**padded, labels=padded["input_ids"], fused_lm_head=True).loss]
        fused.append(model(**packed, fused_lm_head=True).loss)
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=1e-5)


def test_trl_sft_packing_trains_on_padding_free_rows(tmp_path):
    """TRL's `SFTTrainer(packing=True)` feeds GLMForCausalLM padding-free rows (many documents in one row, positions
    restarting at each) and trains it: a learnable pattern is learned, and on a batch from TRL's own collator the
    loss is that of the same documents padded into separate rows, so no document saw another."""
    from trl import SFTConfig, SFTTrainer

    tokenizer = word_tokenizer()
    tokenizer.padding_side = "right"
    rng = random.Random(0)
    spans = [(rng.randrange(len(WORDS) - 16), rng.randint(4, 16)) for _ in range(256)]
    dataset = Dataset.from_dict({"text": [" ".join(WORDS[start : start + n]) for start, n in spans]})
    args = SFTConfig(max_length=64, packing=True, **training_options(tmp_path))
    trainer = SFTTrainer(model=fresh_model(), args=args, train_dataset=dataset, processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    positions = batch["position_ids"]
    assert positions.shape[0] == 1 and int((positions[0] == 0).sum()) > 16  # one row, many documents
    trainer.train()

    model = trainer.model.eval()
    starts = (positions[0] == 0).nonzero().flatten().tolist()
    docs = [doc.tolist() for doc in batch["input_ids"][0].tensor_split(starts[1:])]
    padded = DataCollatorForLanguageModeling(tokenizer, mlm=False)([{"input_ids": doc} for doc in docs])
    with torch.no_grad():
        packed_loss = model(**batch).loss
        padded_loss = model(**padded).loss
    torch.testing.assert_close(packed_loss, padded_loss, atol=1e-4, rtol=1e-4)
    held_out = tokenizer([" ".join(WORDS[s : s + 12]) for s in (3, 17, 30)], return_tensors="pt")
    with torch.no_grad():
        assert float(model(**held_out, labels=held_out["input_ids"]).loss) < 0.2 * CHANCE


def test_lm_eval_scores_alike_at_batch_size_1_and_8(tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from glm_hf.demo.run import load_demo_tokenizer

    tokenizer = load_demo_tokenizer()
    torch.manual_seed(0)
    model = GLMForCausalLM(tiny_config(vocab_size=len(tokenizer), max_position_embeddings=128, initializer_range=0.3))
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    train, held_out = corpus.split_facts(seed=0)
    task = corpus.write_lm_eval_task(tmp_path, "glm_facts", corpus.choice_items(held_out[:40], train))
    manager = TaskManager(include_path=str(tmp_path))
    results = {}
    for batch_size in (1, 8):
        results[batch_size] = lm_eval.simple_evaluate(
            model="hf",
            model_args=f"pretrained={tmp_path / 'model'},dtype=float32",
            tasks=[task],
            task_manager=manager,
            batch_size=batch_size,
            device="cpu",
            log_samples=True,
        )
    scores = {
        size: [float(response[0][0]) for sample in result["samples"][task] for response in sample["resps"]]
        for size, result in results.items()
    }
    assert len(scores[1]) == len(scores[8]) > 40
    assert scores[1] == pytest.approx(scores[8], abs=1e-4)
    assert results[1]["results"][task]["acc,none"] == results[8]["results"][task]["acc,none"]
