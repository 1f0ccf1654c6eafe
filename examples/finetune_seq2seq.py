"""Seq2seq with GLM: English → Chinese translation of fact sentences from the embedded corpus.

The source "Translate to Chinese: <English sentence>" is Part A (GLM appends `[gMASK]`), the Chinese sentence is
generated into it as Part B. Trained with `Seq2SeqTrainer` on translation pairs whose sentences were in the
pretraining text; evaluated with `predict_with_generate` on pairs whose Chinese side is a held-out fact the model
never saw. Prints exact match and character F1 before and after fine-tuning.

    glm-hf demo --output glm-demo          # the pretrained starting point
    python examples/finetune_seq2seq.py --base glm-demo --output glm-translate
    torchrun --nproc-per-node 2 examples/finetune_seq2seq.py --batch-size 16   # data parallel, same global batch
    torchrun --nproc-per-node 2 examples/finetune_seq2seq.py --deepspeed examples/distributed/ds_zero2.json
"""

import argparse

import torch
from datasets import Dataset
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, Seq2SeqTrainer, Seq2SeqTrainingArguments, Trainer

import glm_hf  # noqa: F401  (registers GLM with the Auto classes)
from glm_hf import corpus
from glm_hf.training.seq2seq import DataCollatorForGLMSeq2Seq, Seq2SeqMetrics

PROMPT = "Translate to Chinese: "


def translation_data(seed: int) -> tuple[Dataset, Dataset]:
    """(train, test) pairs; test pairs have a Chinese side that is a held-out fact."""
    _, held_out = corpus.split_facts(seed=seed)
    seen, unseen = corpus.translation_pairs(held_out)
    held_texts = {fact.filled for fact in held_out}
    test = [pair for pair in unseen if pair[1] in held_texts]

    def rows(pairs):
        return Dataset.from_dict({"source": [PROMPT + en for en, _ in pairs], "target": [zh for _, zh in pairs]})

    return rows(seen), rows(test)


def translation_trainer(model, tokenizer, args: argparse.Namespace, **training_options) -> Seq2SeqTrainer:
    """A `Seq2SeqTrainer` on the translation data that evaluates by generating (`predict_with_generate`); `args`
    gives output, max_steps, batch_size (per process), eval_pairs and seed, `training_options` the rest (learning
    rate, checkpointing...)."""
    train, test = translation_data(args.seed)
    if args.eval_pairs is not None:
        test = test.select(range(min(args.eval_pairs, len(test))))
    training = Seq2SeqTrainingArguments(
        output_dir=args.output,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64,
        warmup_steps=args.max_steps // 10,
        predict_with_generate=True,
        use_cpu=not torch.cuda.is_available(),  # on CPU, also what makes torchrun use gloo data parallel
        generation_max_length=64,
        remove_unused_columns=False,
        report_to=[],
        save_strategy="no",
        logging_steps=max(1, args.max_steps // 10),
        seed=args.seed,
        eval_on_start=True,  # the "before" score, taken inside train() (see scores_before_training)
        **training_options,
    )
    return Seq2SeqTrainer(
        model=model,
        args=training,
        train_dataset=train,
        eval_dataset=test,
        data_collator=DataCollatorForGLMSeq2Seq(tokenizer),
        processing_class=tokenizer,
        compute_metrics=Seq2SeqMetrics(tokenizer),
    )


def scores_before_training(trainer: Trainer) -> dict[str, float]:
    """The evaluation `eval_on_start` logged at step 0. Evaluating with `trainer.evaluate()` before `train()`
    instead would leave the model without its DistributedDataParallel wrapper under torchrun (transformers 5.23,
    accelerate 1.15): every process would then train its own copy."""
    return next(entry for entry in trainer.state.log_history if entry["step"] == 0 and "eval_loss" in entry)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="glm-demo", help="a pretrained GLM folder (e.g. from glm-hf demo)")
    parser.add_argument("--output", default="glm-translate")
    parser.add_argument("--max-steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32, help="per process; the global batch is this x processes")
    parser.add_argument("--eval-pairs", type=int, default=None, help="evaluate on the first N test pairs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--deepspeed", help="a DeepSpeed config, e.g. examples/distributed/ds_zero2.json")
    args = parser.parse_args(argv)

    tokenizer = AutoTokenizer.from_pretrained(args.base)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.base)
    trainer = translation_trainer(model, tokenizer, args, learning_rate=1e-3, deepspeed=args.deepspeed)
    train, test = trainer.train_dataset, trainer.eval_dataset
    trainer.train()
    before, after = scores_before_training(trainer), trainer.evaluate()
    trainer.save_model(args.output)  # also saves the tokenizer; on the main process only when distributed
    trainer.save_state()
    if trainer.is_world_process_zero():
        print(f"held-out translations: {len(test)} (train pairs {len(train)})")
        for name in ("exact_match", "token_f1"):
            print(f"{name}: before {before[f'eval_{name}']:.3f}, after {after[f'eval_{name}']:.3f}")
    return {"before": before["eval_exact_match"], "after": after["eval_exact_match"], "f1": after["eval_token_f1"]}


if __name__ == "__main__":
    main()
