"""lm-eval (hf backend) on a trained demo model, through what `AutoModelForCausalLM` gave before and gives now.

    python benchmarks/bench_lm_eval.py --model glm-demo

The task is built from the embedded corpus: each of the 270 held-out fact sentences (never in the demo's training
text), cut before its blank, with the true answer and up to 3 answers of the same kind and language as choices
(`glm_hf.demo.corpus.choice_items`). "before": `GLMForConditionalGeneration`, the head `AutoModelForCausalLM` used to
map to (it reads plain text bidirectionally); "after": `GLMForCausalLM`. Each runs at batch size 1 and 16; the table
gives accuracy and how many of the per-choice log-likelihoods change between the two batch sizes (by > 1e-4).
"""

import argparse
import tempfile

import lm_eval
import torch
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from glm_hf import GLMForCausalLM, GLMForConditionalGeneration, GLMTokenizer, corpus
from glm_hf.demo.run import DEMO_SEED


def evaluate(model, tokenizer, manager: TaskManager, batch_size: int) -> tuple[float, list[float]]:
    result = lm_eval.simple_evaluate(
        model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device="cpu"),
        tasks=["glm_heldout_facts"],
        task_manager=manager,
        log_samples=True,
    )
    scores = [float(r[0][0]) for sample in result["samples"]["glm_heldout_facts"] for r in sample["resps"]]
    return result["results"]["glm_heldout_facts"]["acc,none"], scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="glm-demo", help="a trained `glm-hf demo` folder")
    args = parser.parse_args()
    torch.set_num_threads(2)
    tokenizer = GLMTokenizer.from_pretrained(args.model)
    tokenizer.padding_side = "right"  # lm-eval's own batching; the causal head is padding-proof either way
    train, held_out = corpus.split_facts(seed=DEMO_SEED)
    with tempfile.TemporaryDirectory() as folder:
        corpus.write_lm_eval_task(folder, "glm_heldout_facts", corpus.choice_items(held_out, train))
        manager = TaskManager(include_path=folder)
        rows = []
        for name, head in (
            ("before (GLMForConditionalGeneration)", GLMForConditionalGeneration),
            ("after (GLMForCausalLM)", GLMForCausalLM),
        ):
            model = head.from_pretrained(args.model).eval()
            accuracy_1, scores_1 = evaluate(model, tokenizer, manager, 1)
            accuracy_16, scores_16 = evaluate(model, tokenizer, manager, 16)
            changed = sum(abs(a - b) > 1e-4 for a, b in zip(scores_1, scores_16, strict=True))
            rows.append((name, f"{accuracy_1:.3f}", f"{accuracy_16:.3f}", f"{changed}/{len(scores_1)}"))
    print(f"lm-eval on {len(held_out)} held-out facts (true answer vs up to 3 distractors)")
    print("| head | acc, batch 1 | acc, batch 16 | log-likelihoods changed by batching |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
