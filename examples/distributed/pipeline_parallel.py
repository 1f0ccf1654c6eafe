"""Pipeline-parallel GLM training with `torch.distributed.pipelining`: GPipe or 1F1B schedule over micro-batches.

GLM-130B was trained with pipeline parallelism (PipeDream-Flush, i.e. 1F1B). This example splits a GLM into one
stage per process: contiguous layer ranges, stage 0 also holding the embeddings and position handling, the last
stage the final LayerNorm and the LM head. It then trains on blank-infilling batches from
`DataCollatorForBlankInfilling`, each global batch cut into `--microbatches` micro-batches that the schedule
(`--schedule gpipe|1f1b`) runs through the stages.

What crosses a stage boundary (tensors only): the hidden states `[mb, seq, hidden]`, the Part A lengths `[mb]` and
the 2D position ids `[mb, 2, seq]`. Each stage rebuilds the boolean attention mask (`build_attention_mask`) and the
rotary tables from the last two: that is O(seq) per row instead of the O(seq^2) boolean mask (which gloo and NCCL
could send too), and it keeps float tensors that need no gradient (cos/sin) off the wire, since the pipeline sends
a gradient back for every float tensor it receives.

The loss is the token mean over the whole global batch, as unsplit: each micro-batch's loss is its summed token
loss divided by the global batch's count of labelled tokens, and the schedule sums micro-batch gradients
(`scale_grads=False`); micro-batches need not hold equal numbers of labelled tokens. With tied word embeddings
(GLM, GLM-130B), the first and last stages each hold a copy of the shared matrix; their gradients are summed
across the two before the optimizer step.

Every process loads the whole model and keeps its stage's modules, which suits models that fit in one process's
memory; for larger ones, load only each stage's weights (for example build on the meta device, then load the
stage's part of the checkpoint). `--check` also trains the unsplit model on the same global batches and asserts
that loss, gradients and updated weights match (dropout is turned off for it; use `--optimizer sgd`, see
`ReferenceCheck`).

    torchrun --nproc-per-node 2 examples/distributed/pipeline_parallel.py --schedule 1f1b --microbatches 8
    torchrun --nproc-per-node 2 examples/distributed/pipeline_parallel.py --model glm-demo --check --optimizer sgd
"""

import argparse
import copy
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe
from torch.distributed.pipelining.schedules import PipelineScheduleSingle
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from glm_hf import GLMConfig, GLMForConditionalGeneration, GLMModel
from glm_hf.demo.run import demo_training_texts, load_demo_tokenizer
from glm_hf.model.blank_infilling import build_attention_mask
from glm_hf.training.collator import DataCollatorForBlankInfilling
from glm_hf.training.pretraining import pack_documents

SCHEDULES = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}


def stage_layer_ranges(num_layers: int, num_stages: int) -> list[tuple[int, int]]:
    """Contiguous `[start, end)` layer ranges, one per stage, as even as possible (earlier stages get the extra
    layers, since the last stage also runs the LM head)."""
    if num_layers < num_stages:
        raise ValueError(f"{num_layers} layers cannot fill {num_stages} pipeline stages; use fewer processes.")
    sizes = [num_layers // num_stages + (stage < num_layers % num_stages) for stage in range(num_stages)]
    starts = [sum(sizes[:stage]) for stage in range(num_stages)]
    return [(start, start + size) for start, size in zip(starts, sizes, strict=True)]


class GLMPipelineStage(nn.Module):
    """Layers `[start, end)` of a `GLMForConditionalGeneration`, plus the embeddings and 2D positions on the first
    stage and the final LayerNorm and LM head on the last; holds the model's own modules (no copies).

    First stage: `forward(input_ids, attention_mask, position_ids)`. Later stages: `forward(hidden_states,
    attention_mask, position_ids)`. `attention_mask` is the Part A length per row (the collator's compact form) and
    `position_ids` `[batch, 2, seq]`. Every stage but the last returns `(hidden_states, attention_mask,
    position_ids)`; the last returns the logits `[batch, seq, vocab]`.
    """

    def __init__(self, model: GLMForConditionalGeneration, start: int, end: int, is_first: bool, is_last: bool):
        super().__init__()
        glm, self.config = model.glm, model.config
        self.is_first, self.is_last = is_first, is_last
        self.learned_positions = self.config.position_encoding == "learned_2d"
        if is_first:
            self.word_embeddings = glm.word_embeddings
            self.embedding_dropout = glm.embedding_dropout
            if self.learned_positions:
                self.position_embeddings = glm.position_embeddings
                self.block_position_embeddings = glm.block_position_embeddings
        if not self.learned_positions:
            self.rotary = glm.rotary
        self.layers = nn.ModuleList(glm.layers[start:end])
        if is_last:
            self.final_layernorm = glm.final_layernorm
            self.lm_head = model.lm_head

    def forward(
        self, inputs: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.is_first:
            # GLMModel's own embedding step, run on this stage, which holds the same modules under the same names
            # (a bound `glm.embed` would keep the whole model alive in every process).
            hidden_states, rotary = GLMModel.embed(self, self.word_embeddings(inputs), position_ids)
        else:
            hidden_states = inputs
            rotary = None if self.learned_positions else self.rotary(position_ids, hidden_states.dtype)
        seq_len = hidden_states.shape[1]
        mask = build_attention_mask(attention_mask, seq_len, seq_len)
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask=mask, rotary=rotary)
        if self.is_last:
            return self.lm_head(self.final_layernorm(hidden_states))
        return hidden_states, attention_mask, position_ids


def load_model(args: argparse.Namespace) -> tuple[GLMForConditionalGeneration, PreTrainedTokenizerBase]:
    """The model to split (a saved folder, a config file, or a small default GLM) and a tokenizer for its data.
    Every process loads the full model and keeps its stage; initialisation is seeded, so all processes agree."""
    torch.manual_seed(args.seed)
    if args.model:
        model = GLMForConditionalGeneration.from_pretrained(args.model)
        folder_has_tokenizer = (Path(args.model) / "tokenizer_config.json").is_file()
        tokenizer = AutoTokenizer.from_pretrained(args.model) if folder_has_tokenizer else load_demo_tokenizer()
    else:
        tokenizer = load_demo_tokenizer()
        if args.config:
            config = GLMConfig.from_json_file(args.config)
        else:
            config = GLMConfig(
                vocab_size=len(tokenizer),
                hidden_size=128,
                num_hidden_layers=4,
                num_attention_heads=4,
                max_position_embeddings=args.seq_length,
            )
        model = GLMForConditionalGeneration(config)
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model {model.config.vocab_size}.")
    if model.config.max_position_embeddings < args.seq_length:
        raise ValueError(
            f"--seq-length {args.seq_length} exceeds the model's max_position_embeddings "
            f"({model.config.max_position_embeddings})."
        )
    return model.float(), tokenizer


def training_batches(
    tokenizer: PreTrainedTokenizerBase, steps: int, batch_size: int, seq_length: int, seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    """`steps` global batches of blank-infilling layouts from the demo corpus, all exactly `seq_length` wide: a
    pipeline stage learns its tensor shapes from the first micro-batch, so every batch must have them. Every
    process builds the same batches (same collator seed)."""
    documents, _, _ = demo_training_texts()
    ids = tokenizer(documents, add_special_tokens=False)["input_ids"]
    # Rows leave room for the layout's growth (one `<|startofpiece|>` and one blank per span); the collator
    # shortens the rare row that still overflows.
    rows = pack_documents(ids, seq_length - seq_length // 8, tokenizer.eos_token_id)
    collator = DataCollatorForBlankInfilling(
        tokenizer, max_length=seq_length, pad_to_multiple_of=seq_length, seed=seed
    )
    needed = steps * batch_size
    rows = (rows * (needed // len(rows) + 1))[:needed]
    return [
        collator([{"input_ids": row} for row in rows[step * batch_size : (step + 1) * batch_size]])
        for step in range(steps)
    ]


def disable_dropout(model: nn.Module) -> None:
    """Dropout off (the exact comparison with the unsplit model needs identical forward passes)."""
    model.config.hidden_dropout = model.config.attention_dropout = 0.0
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


@dataclass
class Pipeline:
    """This process's part of a pipeline: its stage module, the `torch.distributed.pipelining` stage and schedule
    that run it, and (with tied embeddings on the first and last stage) the shared matrix and its process group."""

    module: GLMPipelineStage
    stage: PipelineStage
    schedule: PipelineScheduleSingle
    tied_weight: nn.Parameter | None
    tied_group: dist.ProcessGroup | None

    def train_step(self, batch: dict[str, torch.Tensor]) -> float | None:
        """Runs one global batch (a collator batch) through the schedule, accumulating the gradients of the global
        token-mean loss in this stage's parameters (the optimizer step is the caller's); returns the loss on the
        last stage, None elsewhere."""
        loss_kwargs = {"num_items_in_batch": int((batch["labels"] != -100).sum())}
        inputs = (batch["input_ids"], batch["attention_mask"], batch["position_ids"]) if self.stage.is_first else ()
        losses: list[torch.Tensor] = []
        targets = {"target": batch["labels"], "losses": losses} if self.stage.is_last else {}
        self.schedule.step(*inputs, **targets, loss_kwargs=loss_kwargs)
        if self.tied_weight is not None:
            dist.all_reduce(self.tied_weight.grad, group=self.tied_group)
        return sum(loss.item() for loss in losses) if self.stage.is_last else None


def build_pipeline(
    model: GLMForConditionalGeneration, schedule: str, microbatches: int, device: torch.device
) -> Pipeline:
    """Splits `model` into one stage per process of the default group and keeps this process's stage; every
    process must call it (the tied-embedding group is created collectively)."""
    rank, num_stages = dist.get_rank(), dist.get_world_size()
    is_first, is_last = rank == 0, rank == num_stages - 1
    start, end = stage_layer_ranges(model.config.num_hidden_layers, num_stages)[rank]
    module = GLMPipelineStage(model, start, end, is_first, is_last)
    tied_group = None
    if model.config.tie_word_embeddings and num_stages > 1:
        tied_group = dist.new_group([0, num_stages - 1])
    tied_weight = model.glm.word_embeddings.weight if tied_group is not None and (is_first or is_last) else None
    loss_function, vocab_size = model.loss_function, model.config.vocab_size

    def loss_fn(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: int) -> torch.Tensor:
        # The model's own loss, summed over the micro-batch's labelled tokens and divided by the global batch's
        # count: micro-batch losses add up to the global token mean, and so do their gradients (scale_grads=False).
        return loss_function(logits, labels, vocab_size, num_items_in_batch=num_items_in_batch)

    stage = PipelineStage(module, rank, num_stages, device)
    runner = SCHEDULES[schedule](stage, microbatches, loss_fn=loss_fn, scale_grads=False)
    return Pipeline(module, stage, runner, tied_weight, tied_group)


def make_optimizer(params: Iterable[nn.Parameter], name: str, learning_rate: float) -> torch.optim.Optimizer:
    """AdamW (what GLM trained with) or plain SGD (whose update is linear in the gradient, for exact checks)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=learning_rate)
    return torch.optim.AdamW(params, lr=learning_rate)


class ReferenceCheck:
    """The unsplit model trained alongside the pipeline on the same global batches, for `--check`: after each step,
    the largest loss, gradient and updated-weight differences over all processes must stay within `tolerance`.

    With AdamW, compare with `--optimizer sgd` instead: AdamW's first update is `lr * g / (|g| + eps)`, which turns
    float32 rounding differences on gradients of the order of eps (~1e-9) into weight differences of about 1% of
    the learning rate, while the gradients themselves agree to rounding."""

    def __init__(self, model: GLMForConditionalGeneration, optimizer: str, learning_rate: float, tolerance: float):
        self.model = copy.deepcopy(model)
        self.optimizer = make_optimizer(self.model.parameters(), optimizer, learning_rate)
        self.params = dict(self.model.named_parameters())
        self.names = {id(param): name for name, param in model.named_parameters()}
        self.tolerance = tolerance

    def step(
        self,
        batch: dict[str, torch.Tensor],
        stage_params: list[nn.Parameter],
        optimizer: torch.optim.Optimizer,
        pipeline_loss: float | None,
    ) -> dict[str, float]:
        """Runs the unsplit step on `batch` next to the pipeline's (whose gradients are in `stage_params`), steps
        both optimizers and returns the largest differences over all processes (loss, gradients, weights) and the
        largest gradient (the scale they compare against); raises when a difference exceeds the tolerance."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.model(**batch).loss
        loss.backward()
        pairs = [(param, self.params[self.names[id(param)]]) for param in stage_params]
        with torch.no_grad():
            grad = max(float((mine.grad - theirs.grad).abs().max()) for mine, theirs in pairs)
            largest_grad = max(float(theirs.grad.abs().max()) for _, theirs in pairs)
            optimizer.step()
            self.optimizer.step()
            weight = max(float((mine - theirs).abs().max()) for mine, theirs in pairs)
        loss_diff = abs(pipeline_loss - loss.item()) if pipeline_loss is not None else 0.0
        found = torch.tensor([loss_diff, grad, weight, largest_grad], dtype=torch.float64, device=loss.device)
        dist.all_reduce(found, op=dist.ReduceOp.MAX)
        diffs = dict(zip(("loss", "grad", "weight", "largest_grad"), found.tolist(), strict=True))
        if max(diffs["loss"], diffs["grad"], diffs["weight"]) > self.tolerance:
            raise AssertionError(f"pipeline and unsplit model differ beyond {self.tolerance}: {diffs}")
        return diffs


def main(argv: list[str] | None = None) -> list[float]:
    """Trains `--steps` steps; returns the step losses (on the last stage; empty elsewhere)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a saved GLM folder (default: a small freshly initialised GLM)")
    parser.add_argument("--config", help="a GLMConfig json to initialise from, instead of --model")
    parser.add_argument("--schedule", choices=sorted(SCHEDULES), default="1f1b")
    parser.add_argument("--microbatches", type=int, default=4, help="micro-batches per global batch")
    parser.add_argument("--batch-size", type=int, default=16, help="global batch (sequences)")
    parser.add_argument("--seq-length", type=int, default=128, help="fixed padded sequence width")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", action="store_true", help="compare every step with the unsplit model")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="largest difference --check allows")
    args = parser.parse_args(argv)
    if args.batch_size % args.microbatches:
        parser.error(f"--batch-size {args.batch_size} must be a multiple of --microbatches {args.microbatches}.")

    use_cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if use_cuda else "gloo")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)

    model, tokenizer = load_model(args)
    if args.check:
        disable_dropout(model)
    model.to(device).train()
    check = ReferenceCheck(model, args.optimizer, args.learning_rate, args.tolerance) if args.check else None
    pipeline = build_pipeline(model, args.schedule, args.microbatches, device)
    del model  # only this stage's modules stay referenced
    optimizer = make_optimizer(pipeline.module.parameters(), args.optimizer, args.learning_rate)

    step_losses = []
    batches = training_batches(tokenizer, args.steps, args.batch_size, args.seq_length, args.seed)
    for step, batch in enumerate(batches, start=1):
        batch = {name: tensor.to(device) for name, tensor in batch.items()}
        optimizer.zero_grad(set_to_none=True)
        loss = pipeline.train_step(batch)
        if check is not None:
            diffs = check.step(batch, list(pipeline.module.parameters()), optimizer, loss)
            if loss is not None:  # printed by the last stage alone, so that lines never interleave
                print(
                    f"check step {step} ({args.schedule}, {args.microbatches} micro-batches): max |diff| vs unsplit: "
                    f"loss {diffs['loss']:.2e}, grads {diffs['grad']:.2e} (largest grad {diffs['largest_grad']:.2e}), "
                    f"weights after step {diffs['weight']:.2e}",
                    flush=True,
                )
        else:
            optimizer.step()
        if loss is not None:
            step_losses.append(loss)
            print(f"step {step}: loss {loss:.4f} ({args.schedule}, {args.microbatches} micro-batches)", flush=True)
    dist.destroy_process_group()
    return step_losses


if __name__ == "__main__":
    main()
