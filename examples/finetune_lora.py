"""LoRA fine-tuning of GLM with peft: the English → Chinese translation task of `finetune_seq2seq.py`, training
only low-rank adapters on the attention and MLP projections, with activation checkpointing on.

GLM's projections are `query_key_value` and `dense` (attention), `dense_h_to_4h` and `dense_4h_to_h` (MLP). The
adapter is saved alone (a few hundred KB) and reloaded onto the base model with `PeftModel.from_pretrained`.

    glm-hf demo --output glm-demo
    python examples/finetune_lora.py --base glm-demo --output glm-translate-lora
"""

import argparse

from finetune_seq2seq import translation_data
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, Seq2SeqTrainer, Seq2SeqTrainingArguments

import glm_hf  # noqa: F401  (registers GLM with the Auto classes)
from glm_hf.seq2seq import DataCollatorForGLMSeq2Seq, Seq2SeqMetrics

TARGET_MODULES = ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="glm-demo", help="a pretrained GLM folder (e.g. from glm-hf demo)")
    parser.add_argument("--output", default="glm-translate-lora")
    parser.add_argument("--max-steps", type=int, default=600)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--eval-pairs", type=int, default=None, help="evaluate on the first N test pairs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    tokenizer = AutoTokenizer.from_pretrained(args.base)
    base = AutoModelForSeq2SeqLM.from_pretrained(args.base)
    model = get_peft_model(base, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules=TARGET_MODULES))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    train, test = translation_data(args.seed)
    if args.eval_pairs is not None:
        test = test.select(range(min(args.eval_pairs, len(test))))
    training = Seq2SeqTrainingArguments(
        output_dir=args.output,
        max_steps=args.max_steps,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=64,
        learning_rate=5e-3,
        warmup_steps=args.max_steps // 10,
        activation_checkpointing=True,
        predict_with_generate=True,
        generation_max_length=64,
        remove_unused_columns=False,
        report_to=[],
        save_strategy="no",
        logging_steps=max(1, args.max_steps // 10),
        seed=args.seed,
    )
    trainer = Seq2SeqTrainer(
        model=model,
        args=training,
        train_dataset=train,
        eval_dataset=test,
        data_collator=DataCollatorForGLMSeq2Seq(tokenizer),
        processing_class=tokenizer,
        compute_metrics=Seq2SeqMetrics(tokenizer),
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    model.save_pretrained(args.output)
    reloaded = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(args.base), args.output)
    trainer.model = reloaded.eval()
    reloaded_scores = trainer.evaluate()
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
