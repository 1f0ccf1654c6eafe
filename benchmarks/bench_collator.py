"""Throughput of DataCollatorForBlankInfilling, and its share of a training step.

Builds batches of `--batch` sequences of `--length` tokens (default 8 x 512) from THUDM's GPT-2 vocabulary (ids
drawn at random, so every objective has text to mask) with the default objective mix of the demo
(token 0.5, sentence 0.25, document 0.25), and compares:
- sequences/s of GLM's collator vs transformers' `DataCollatorForLanguageModeling` (BERT-style 15% MLM) on the
  same examples;
- the collator's time per batch vs one training step (forward, backward, AdamW update) of a small GLM (hidden
  256, 4 layers) on that batch;
- the same share for `glm-hf demo`'s own batches: its model, tokenizer, collator settings and packed corpus rows.
Goal: collator <= 5% of a step (reported, never asserted).

    python benchmarks/bench_collator.py [--batch 8] [--length 512] [--repeats 20]
"""

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from datasets import Dataset
from transformers import DataCollatorForLanguageModeling

from glm_hf import GLMConfig, GLMForConditionalGeneration
from glm_hf.convert.vocab import gpt2_tokenizer
from glm_hf.demo.run import DemoSettings, demo_config, demo_training_texts, load_demo_tokenizer
from glm_hf.training.collator import DataCollatorForBlankInfilling
from glm_hf.training.pretraining import packed_dataset

VOCAB = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "thudm-vocab"


def median_seconds(run, repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_step_seconds(model: GLMForConditionalGeneration, batch: dict, repeats: int) -> float:
    """Median time of one training step on `batch`: forward, backward and an AdamW update."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return median_seconds(step, repeats)


def demo_share(repeats: int) -> tuple[float, float, int]:
    """(collator seconds, train step seconds, batch size) for one batch of the demo run."""
    settings = DemoSettings()
    tokenizer = load_demo_tokenizer()
    texts = Dataset.from_dict({"text": demo_training_texts()[0]})
    rows = packed_dataset(texts, tokenizer, settings.row_length, "text")
    examples = [rows[i] for i in range(settings.batch_size)]
    collator = DataCollatorForBlankInfilling(
        tokenizer,
        mask_ratio=settings.mask_ratio,
        objective_probs=settings.objective_probs,
        max_length=2 * settings.row_length,
        seed=0,
    )
    torch.manual_seed(0)
    model = GLMForConditionalGeneration(demo_config(tokenizer, settings))
    collate_time = median_seconds(lambda: collator(examples), repeats)
    return collate_time, train_step_seconds(model, collator(examples), repeats), settings.batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--vocab-dir", default=str(VOCAB))
    args = parser.parse_args()

    tokenizer = gpt2_tokenizer(f"{args.vocab_dir}/gpt2-vocab.json", f"{args.vocab_dir}/gpt2-merges.txt")
    rng = np.random.default_rng(0)
    text_ids = rng.integers(0, 50256, size=(args.batch, args.length - 2))
    examples = [{"input_ids": [tokenizer.cls_token_id, *row.tolist(), tokenizer.eos_token_id]} for row in text_ids]
    glm_collator = DataCollatorForBlankInfilling(
        tokenizer, objective_probs=(0.5, 0.25, 0.25), max_length=args.length, seed=0
    )
    mlm_collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)

    glm_time = median_seconds(lambda: glm_collator(examples), args.repeats)
    mlm_time = median_seconds(lambda: mlm_collator(examples), args.repeats)

    config = GLMConfig(
        vocab_size=50304,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=args.length + 1,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    torch.manual_seed(0)
    model = GLMForConditionalGeneration(config)
    step_time = train_step_seconds(model, glm_collator(examples), max(3, args.repeats // 4))
    demo_collate, demo_step, demo_batch = demo_share(args.repeats)

    print(f"batch {args.batch} x {args.length} tokens, torch threads {torch.get_num_threads()}")
    print(f"{'':44}{'ms/batch':>10}{'seq/s':>10}")
    print(f"{'GLM DataCollatorForBlankInfilling':44}{glm_time * 1e3:10.2f}{args.batch / glm_time:10.0f}")
    print(f"{'transformers DataCollatorForLanguageModeling':44}{mlm_time * 1e3:10.2f}{args.batch / mlm_time:10.0f}")
    print(f"{'GLM train step (hidden 256, 4 layers)':44}{step_time * 1e3:10.2f}")
    print(f"GLM collator / MLM collator time: {glm_time / mlm_time:.2f}x")
    for name, collate, train in (
        (f"{args.batch} x {args.length}, hidden 256", glm_time, step_time),
        (f"glm-hf demo batch ({demo_batch} packed rows)", demo_collate, demo_step),
    ):
        share = collate / (collate + train)
        print(
            f"{name}: collator {collate * 1e3:.2f} ms, step {train * 1e3:.1f} ms, collator share {share:.1%} "
            f"(goal <= 5%: {'met' if share <= 0.05 else 'MISSED'})"
        )


if __name__ == "__main__":
    main()
