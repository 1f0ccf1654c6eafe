"""The stock Trainer trains GLM with GLM-aligned labels and gradient accumulation."""

import random

import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from glm_hf import GLMForConditionalGeneration
from glm_hf.model.blank_infilling import batch_infilling, infilling_example
from tests.helpers.tiny import tiny_config


def examples(n: int) -> list[dict]:
    rng = random.Random(0)
    rows = []
    for _ in range(n):
        part_a = [rng.randrange(9, 60) for _ in range(8)]
        part_a[3] = 4
        span = [rng.randrange(9, 60) for _ in range(rng.randint(1, 4))]
        rows.append(infilling_example(part_a, [span], [4, 5, 6], 7, 8))
    return rows


def test_accumulated_trainer_step_equals_one_full_batch_step(tmp_path):
    rows = examples(4)
    torch.manual_seed(0)
    model = GLMForConditionalGeneration(tiny_config())
    manual = GLMForConditionalGeneration(tiny_config())
    manual.load_state_dict(model.state_dict())

    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        learning_rate=0.5,
        optim="sgd",
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        use_cpu=True,
        report_to=[],
        remove_unused_columns=False,
        save_strategy="no",
    )
    Trainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), data_collator=lambda b: batch_infilling(b, 0)
    ).train()

    manual.train()
    manual(**batch_infilling(rows, 0)).loss.backward()
    with torch.no_grad():
        for parameter in manual.parameters():
            parameter -= 0.5 * parameter.grad
    for (name, trained), expected in zip(model.named_parameters(), manual.parameters(), strict=True):
        torch.testing.assert_close(trained, expected, atol=1e-6, rtol=1e-5, msg=name)
