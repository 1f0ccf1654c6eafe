"""LoRA fine-tuning of GLM with peft: the English → Chinese translation task of `finetune_seq2seq.py`, training
only low-rank adapters on the attention and MLP projections, with activation checkpointing on.

GLM's projections are `query_key_value` and `dense` (attention), `dense_h_to_4h` and `dense_4h_to_h` (MLP). The
adapter is saved alone (a few hundred KB) and reloaded onto the base model with `PeftModel.from_pretrained`.

    glm-hf demo --output glm-demo
    python examples/finetune_lora.py --base glm-demo --output glm-translate-lora
"""

import argparse

from finetune_seq2seq import scores_before_training, translation_trainer
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import glm_hf  # noqa: F401  (registers GLM with the Auto classes)

TARGET_MODULES = ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="glm-demo", help="a pretrained GLM folder (e.g. from glm-hf demo)")
    parser.add_argument("--output", default="glm-translate-lora")
    parser.add_argument("--max-steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--eval-pairs", type=int, default=None, help="evaluate on the first N test pairs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    tokenizer = AutoTokenizer.from_pretrained(args.base)
    base = AutoModelForSeq2SeqLM.from_pretrained(args.base)
    model = get_peft_model(base, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules=TARGET_MODULES))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    trainer = translation_trainer(model, tokenizer, args, learning_rate=5e-3, activation_checkpointing=True)
    test = trainer.eval_dataset
    trainer.train()
    before, after = scores_before_training(trainer), trainer.evaluate()
    if trainer.is_world_process_zero():
        model.save_pretrained(args.output)
    trainer.accelerator.wait_for_everyone()
    reloaded = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(args.base), args.output)
    trainer.model = reloaded.eval()
    reloaded_scores = trainer.evaluate()
    if trainer.is_world_process_zero():
        print(f"trainable parameters: {trainable:,} of {total:,} ({trainable / total:.1%})")
        print(f"held-out translations: {len(test)}")
        print(f"exact_match: before {before['eval_exact_match']:.3f}, after {after['eval_exact_match']:.3f}")
        print(f"reloaded adapter: exact_match {reloaded_scores['eval_exact_match']:.3f}")
    return {
        "before": before["eval_exact_match"],
        "after": after["eval_exact_match"],
        "reloaded": reloaded_scores["eval_exact_match"],
        "trainable": trainable / total,
    }


if __name__ == "__main__":
    main()
