"""DataCollatorForBlankInfilling under the stock Trainer: a run resumed from a checkpoint is bit-identical to the
uninterrupted run (the Trainer skips the batches already trained on without collating them)."""

import numpy as np
import pytest
import torch

from glm_hf import GLMTokenizer
from glm_hf.training.collator import DataCollatorForBlankInfilling
from tests.helpers.tiny import tiny_model

CORPUS = ["The capital of France is Paris. The capital of Japan is Tokyo! Is it? 北京是中国的首都。东京呢？"] * 40


@pytest.fixture(scope="module")
def tokenizer() -> GLMTokenizer:
    return GLMTokenizer.train_bpe(CORPUS, vocab_size=400)


def train(tokenizer, output_dir, workers: int, resume_from_checkpoint: str | None = None) -> dict[str, torch.Tensor]:
    """Final weights of 7 steps over 12 rows in batches of 4 (3 steps an epoch), a checkpoint every 4 steps, with
    `workers` DataLoader workers."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    rng = np.random.default_rng(0)
    rows = [
        [tokenizer.cls_token_id, *rng.integers(9, 300, size=30).tolist(), tokenizer.eos_token_id] for _ in range(12)
    ]
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=7,
        per_device_train_batch_size=4,
        learning_rate=5e-3,
        use_cpu=True,
        report_to=[],
        save_strategy="steps",
        save_steps=4,
        logging_steps=1,
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=workers,
    )
    data = DataCollatorForBlankInfilling(tokenizer, objective_probs=(0.6, 0.2, 0.2), seed=0, max_length=64)
    model = tiny_model(vocab_size=len(tokenizer), max_position_embeddings=128)
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_dict({"input_ids": rows}), data_collator=data)
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return {name: tensor.detach().clone() for name, tensor in trainer.model.state_dict().items()}


@pytest.mark.parametrize("workers", [0, 2])
def test_trainer_resumed_from_a_checkpoint_matches_the_uninterrupted_run(tokenizer, tmp_path, workers):
    uninterrupted = train(tokenizer, tmp_path / "full", workers)
    checkpoint = tmp_path / "full" / "checkpoint-4"  # one step into the second epoch: the Trainer skips a batch
    assert checkpoint.is_dir()
    resumed = train(tokenizer, tmp_path / "resumed", workers, resume_from_checkpoint=str(checkpoint))
    assert resumed.keys() == uninterrupted.keys()
    for name, weights in uninterrupted.items():
        assert torch.equal(resumed[name], weights), f"{name} differs after resuming"
