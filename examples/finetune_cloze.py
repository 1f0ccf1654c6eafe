"""Cloze classification with GLM (PET): "is this fact true?" on the embedded corpus.

A fact sentence, either true or with its answer swapped for another of the same kind, goes into the pattern
"{text} Is that right? [MASK]." and the model chooses between the verbalizers "No" and "Yes". Training uses the
training facts; evaluation the held-out fact sentences (never in the pretraining text). Prints accuracy before and
after fine-tuning next to the majority baseline.

    glm-hf demo --output glm-demo          # the pretrained starting point
    python examples/finetune_cloze.py --base glm-demo --output glm-cloze
"""

import argparse
import random

import torch
from datasets import Dataset
from finetune_seq2seq import scores_before_training
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EvalPrediction,
    Trainer,
    TrainingArguments,
)

import glm_hf  # noqa: F401  (registers GLM with the Auto classes)
from glm_hf import corpus
from glm_hf.training.cloze import cloze_config

PATTERN = "{text} Is that right? [MASK]."
LABEL_WORDS = {"false": "No", "true": "Yes"}


def true_or_false(facts: list[corpus.Fact], seed: int) -> Dataset:
    """Each fact once as stated (label 1) and once with a wrong answer of the same kind and language (label 0)."""
    rng = random.Random(seed)
    answers: dict[tuple[str, str], list[str]] = {}
    for fact in facts:
        answers.setdefault((fact.kind, fact.language), []).append(fact.answer)
    texts, labels = [], []
    for fact in facts:
        wrong = rng.choice([a for a in answers[fact.kind, fact.language] if a != fact.answer] or [fact.answer])
        texts += [fact.filled, fact.text.replace(corpus.MASK, wrong)]
        labels += [1, int(wrong == fact.answer)]
    return Dataset.from_dict({"text": texts, "label": labels})


def accuracy(prediction: EvalPrediction) -> dict[str, float]:
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="glm-demo", help="a pretrained GLM folder (e.g. from glm-hf demo)")
    parser.add_argument("--output", default="glm-cloze")
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32, help="per process; the global batch is this x processes")
    parser.add_argument("--train-facts", type=int, default=None, help="use the first N training facts (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    tokenizer = AutoTokenizer.from_pretrained(args.base)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.base, **cloze_config(tokenizer, PATTERN, LABEL_WORDS)
    )
    train_facts, held_out = corpus.split_facts(seed=args.seed)
    tokenize = lambda batch: tokenizer(batch["text"])  # noqa: E731
    train = true_or_false(train_facts[: args.train_facts], args.seed).map(tokenize, batched=True)
    test = true_or_false(held_out, args.seed + 1).map(tokenize, batched=True)
    training = TrainingArguments(
        output_dir=args.output,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64,
        learning_rate=1e-3,
        use_cpu=not torch.cuda.is_available(),  # on CPU, also what makes torchrun use gloo data parallel
        warmup_steps=args.max_steps // 10,
        report_to=[],
        save_strategy="no",
        logging_steps=max(1, args.max_steps // 10),
        seed=args.seed,
        eval_on_start=True,  # the "before" score, taken inside train() (see scores_before_training)
    )
    trainer = Trainer(
        model=model,
        args=training,
        train_dataset=train.remove_columns("text"),
        eval_dataset=test.remove_columns("text"),
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=accuracy,
    )
    trainer.train()
    before = scores_before_training(trainer)["eval_accuracy"]
    after = trainer.evaluate()["eval_accuracy"]
    majority = max(sum(test["label"]), len(test) - sum(test["label"])) / len(test)
    trainer.save_model(args.output)  # also saves the tokenizer; on the main process only when distributed
    trainer.save_state()
    if trainer.is_world_process_zero():
        print(f"held-out true/false facts: {len(test)}")
        print(f"accuracy before fine-tuning {before:.3f}, after {after:.3f}, majority baseline {majority:.3f}")
    return {"before": before, "after": after, "majority": majority}


if __name__ == "__main__":
    main()
