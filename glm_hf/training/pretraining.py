"""Pretraining a GLM with the blank-infilling collator and the stock `Trainer`, and what a run leaves behind:
packed training rows, blank-filling evaluation, a loss curve and a model card."""

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainingArguments

from ..model.configuration_glm import GLMConfig
from ..model.modeling_glm import GLMForConditionalGeneration
from ..model_card import LOG_HISTORY_FILE, CardInfo, write_model_card
from .collator import DataCollatorForBlankInfilling

LOSS_CURVE_FILE = "loss_curve.png"


def pack_documents(documents: Iterable[Sequence[int]], row_length: int, separator_id: int) -> list[list[int]]:
    """Token rows of at most `row_length` tokens, each holding whole consecutive documents, every document followed
    by `separator_id`. A document longer than a row is cut into row-sized pieces (nothing is dropped; the last piece
    keeps a text token before the separator, so no row is a separator alone), so training steps carry no padding
    beyond the last row."""
    if row_length < 2:
        raise ValueError(f"row_length must hold a token and its separator (>= 2), got {row_length}.")
    rows: list[list[int]] = []
    current: list[int] = []
    for document in documents:
        tokens = [*document, separator_id]
        if current and len(current) + len(tokens) > row_length:
            rows.append(current)
            current = []
        while len(tokens) > row_length:
            cut = row_length - 1 if len(tokens) == row_length + 1 else row_length
            rows.append(tokens[:cut])
            tokens = tokens[cut:]
        current += tokens
    if current:
        rows.append(current)
    return rows


def packed_dataset(dataset: Dataset, tokenizer: PreTrainedTokenizerBase, row_length: int, text_column: str) -> Dataset:
    """`dataset`'s `text_column` tokenized and packed into rows of `row_length` tokens (one `input_ids` column)."""
    if text_column not in dataset.column_names:
        raise ValueError(
            f"the dataset has no column {text_column!r} (columns: {dataset.column_names}); name the text column."
        )

    def pack(batch: dict[str, list]) -> dict[str, list]:
        texts = [text for text in batch[text_column] if text and text.strip()]
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        return {"input_ids": pack_documents(ids, row_length, tokenizer.eos_token_id)}

    return dataset.map(pack, batched=True, batch_size=1000, remove_columns=dataset.column_names, desc="packing")


def pretraining_arguments(
    output_dir: str | Path,
    max_steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int = 0,
    progress_bar: bool = True,
) -> TrainingArguments:
    """`TrainingArguments` for pretraining from scratch: AdamW with 10% warmup into a cosine decay, about 40 loss
    log points for the curve, no checkpoints, the GPU when there is one (on CPU, torchrun and `accelerate launch`
    run data parallel over gloo)."""
    return TrainingArguments(
        output_dir=str(output_dir),
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=max_steps // 10,
        lr_scheduler_type="cosine",
        weight_decay=0.01,
        logging_steps=max(1, max_steps // 40),
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        dataloader_drop_last=True,
        disable_tqdm=not progress_bar,
        ddp_find_unused_parameters=False,  # every GLM parameter takes part in each step
    )


def pretrain(
    texts: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    config: GLMConfig,
    output_dir: str | Path,
    *,
    text_column: str = "text",
    row_length: int = 256,
    max_steps: int = 1000,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    seed: int = 0,
    progress_bar: bool = True,
    **collator_options,
) -> Trainer:
    """Trains a freshly initialised GLM of `config` on `texts[text_column]` with blank infilling: the texts are
    packed into rows of `row_length` tokens and `DataCollatorForBlankInfilling(**collator_options)` lays them out.
    Runs unchanged under `torchrun`/`accelerate launch` (data parallel; `batch_size` is per process).
    Returns the `Trainer` (its `model` is trained, `state.log_history` holds the losses); nothing is saved."""
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the model only {config.vocab_size} embeddings; "
            "set config.vocab_size = len(tokenizer)."
        )
    # Both position encodings bound the 2D positions by max_position_embeddings (the learned tables' rows; for
    # rotary_2d, the longest Part A and span the model accepts), so a row too long would fail at a training step.
    if config.max_position_embeddings < row_length + 2:
        raise ValueError(
            f"row_length={row_length} needs positions up to {row_length + 1} (a row's Part A and its spans), past "
            f"max_position_embeddings={config.max_position_embeddings} of the {config.position_encoding} config; "
            f"use row_length <= {config.max_position_embeddings - 2} or max_position_embeddings >= {row_length + 2}."
        )
    torch.manual_seed(seed)
    rows = packed_dataset(texts, tokenizer, row_length, text_column)
    if len(rows) < batch_size:
        raise ValueError(f"the texts pack into {len(rows)} rows, fewer than one batch of {batch_size}.")
    args = pretraining_arguments(output_dir, max_steps, batch_size, learning_rate, seed, progress_bar)
    # Ranks collate different rows, so their blanks differ anyway; the rank in the seed also separates rows
    # duplicated across ranks.
    collator = DataCollatorForBlankInfilling(
        tokenizer, max_length=2 * row_length, seed=seed + args.process_index, **collator_options
    )
    trainer = Trainer(model=GLMForConditionalGeneration(config), args=args, train_dataset=rows, data_collator=collator)
    trainer.train()
    return trainer


@torch.no_grad()
def fill_blanks(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_new_tokens: int = 16,
    batch_size: int = 64,
) -> list[str]:
    """The greedy fill of the first blank of each text (without `<|startofpiece|>`/`<|endofpiece|>` and surrounding
    whitespace), generated in left-padded batches with the KV cache."""
    model.eval()
    fills: list[str] = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(list(texts[start : start + batch_size]), return_tensors="pt", padding=True)
        output = model.generate(**batch.to(model.device), max_new_tokens=max_new_tokens, do_sample=False)
        generated = output[:, batch["input_ids"].shape[1] :]
        fills += [text.strip() for text in tokenizer.batch_decode(generated, skip_special_tokens=True)]
    return fills


def save_loss_curve(log_history: list[dict], path: str | Path, title: str = "GLM pretraining") -> None:
    """Plots the training loss logged by `Trainer` (`trainer.state.log_history`) against the step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    points = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry]
    if not points:
        raise ValueError("the log history has no training loss; set TrainingArguments.logging_steps to log some.")
    figure, axes = pyplot.subplots(figsize=(6, 4), dpi=100)
    axes.plot(*zip(*points, strict=True), marker=".")
    axes.set_xlabel("step")
    axes.set_ylabel("blank-infilling loss (Part B tokens)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)


def save_run_artifacts(
    output_dir: str | Path, log_history: list[dict], card: CardInfo, parameters: int | None = None
) -> None:
    """Writes the loss curve, the raw log history and the model card (`README.md`) next to a saved model."""
    output_dir = Path(output_dir)
    save_loss_curve(log_history, output_dir / LOSS_CURVE_FILE)
    (output_dir / LOG_HISTORY_FILE).write_text(json.dumps(log_history, indent=1), encoding="utf-8")
    write_model_card(output_dir, card, parameters)


__all__ = [
    "fill_blanks",
    "pack_documents",
    "packed_dataset",
    "pretrain",
    "pretraining_arguments",
    "save_loss_curve",
    "save_run_artifacts",
]
