"""Throughput of DataCollatorForBlankInfilling, and its share of a training step.

Builds batches of `--batch` sequences of `--length` tokens (default 8 x 512) from THUDM's GPT-2 vocabulary (ids
drawn at random, so every objective has text to mask) with the default objective mix of the demo
(token 0.5, sentence 0.25, document 0.25), and compares:
- sequences/s of GLM's collator vs transformers' `DataCollatorForLanguageModeling` (BERT-style 15% MLM) on the
  same examples;
- the collator's time per batch vs one forward + backward step of a small GLM (hidden 256, 4 layers) on that batch.
Goal: collator <= 5% of a step (reported, never asserted).

    python benchmarks/bench_collator.py [--batch 8] [--length 512] [--repeats 20]
"""

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import DataCollatorForLanguageModeling  # noqa: E402

from glm_hf import GLMConfig, GLMForConditionalGeneration  # noqa: E402
from glm_hf.collator import DataCollatorForBlankInfilling  # noqa: E402
from glm_hf.convert.vocab import gpt2_tokenizer  # noqa: E402

VOCAB = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "thudm-vocab"


def median_seconds(run, repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
    model = GLMForConditionalGeneration(config).train()
    batch = glm_collator(examples)

    def step() -> None:
        model(**batch).loss.backward()
        model.zero_grad(set_to_none=True)

    step_time = median_seconds(step, max(3, args.repeats // 4))

    print(f"batch {args.batch} x {args.length} tokens, torch threads {torch.get_num_threads()}")
    print(f"{'':44}{'ms/batch':>10}{'seq/s':>10}")
    print(f"{'GLM DataCollatorForBlankInfilling':44}{glm_time * 1e3:10.2f}{args.batch / glm_time:10.0f}")
    print(f"{'transformers DataCollatorForLanguageModeling':44}{mlm_time * 1e3:10.2f}{args.batch / mlm_time:10.0f}")
    print(f"{'GLM train step (hidden 256, 4 layers)':44}{step_time * 1e3:10.2f}")
    print(f"GLM collator / MLM collator time: {glm_time / mlm_time:.2f}x")
    share = glm_time / (glm_time + step_time)
    print(f"collator share of a step: {share:.1%} (goal <= 5%: {'met' if share <= 0.05 else 'MISSED'})")


if __name__ == "__main__":
    main()
