"""FSDP2 blank-infilling training of a GLM with torch's `fully_shard`, one shard unit per `GLMBlock` (GLM's
`_no_split_modules`): parameters, gradients and optimizer state are split across the processes and each block's
parameters are gathered only while it runs.

accelerate (1.15) turns FSDP on only for GPU-type backends; on CPU it silently falls back to DDP. So the Trainer
route is `accelerate launch --config_file examples/distributed/fsdp2.yaml <script>` on GPUs, and this script applies
FSDP2 directly, which runs anywhere torch.distributed does (gloo on CPU, NCCL on GPUs):

    torchrun --nproc-per-node 2 examples/distributed/fsdp2_train.py --base glm-demo --output glm-fsdp
    python examples/distributed/fsdp2_train.py --base glm-demo --output glm-single   # the same run, 1 process

Every process builds the same global batch and trains on its slice; the loss is normalised by the global count of
Part B tokens, so a run on N processes follows the 1-process run with the same global batch.
"""

import argparse
import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from datasets import Dataset
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from glm_hf import GLMForConditionalGeneration, corpus
from glm_hf.training.collator import DataCollatorForBlankInfilling
from glm_hf.training.pretraining import packed_dataset


def shard(model: GLMForConditionalGeneration) -> None:
    """FSDP2 on every module named in `model._no_split_modules` (the GLM blocks), then on the whole model (the
    embeddings, final LayerNorm and the tied output layer form the root unit)."""
    for module in model.modules():
        if type(module).__name__ in model._no_split_modules:
            fully_shard(module)
    fully_shard(model)


def global_batches(
    tokenizer: PreTrainedTokenizerBase, steps: int, batch_size: int, row_length: int, seed: int
) -> Iterator[dict[str, torch.Tensor]]:
    """`steps` blank-infilling batches of `batch_size` packed corpus rows, identical in every process."""
    texts = corpus.documents(seed=seed, include_prose=False)
    rows = packed_dataset(Dataset.from_dict({"text": texts}), tokenizer, row_length, "text").shuffle(seed=seed)
    if len(rows) < steps * batch_size:
        raise ValueError(f"the corpus packs into {len(rows)} rows, fewer than {steps} batches of {batch_size}.")
    collator = DataCollatorForBlankInfilling(tokenizer, max_length=2 * row_length, seed=seed)
    for step in range(steps):
        yield collator([rows[i] for i in range(step * batch_size, (step + 1) * batch_size)])


def train_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor], rank: int, world: int
) -> float:
    """One optimizer step on this process's slice of the global batch; returns the global-batch loss."""
    labelled = (batch["labels"] != -100).sum()
    per_rank = batch["input_ids"].shape[0] // world
    part = {name: value[rank * per_rank : (rank + 1) * per_rank] for name, value in batch.items()}
    loss = model(**part, num_items_in_batch=labelled).loss  # this slice's share of the global mean
    (loss * world).backward()  # FSDP averages gradients over the processes
    optimizer.step()
    optimizer.zero_grad()
    total = loss.detach().clone()
    if world > 1:
        dist.all_reduce(total)
    return total.item()


def main(argv: list[str] | None = None) -> list[float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="a saved GLM folder with its tokenizer")
    parser.add_argument("--output", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--global-batch", type=int, default=16, help="rows per step over all processes")
    parser.add_argument("--row-length", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if args.global_batch % world:
        raise SystemExit(f"--global-batch {args.global_batch} does not split evenly over {world} processes.")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    tokenizer = AutoTokenizer.from_pretrained(args.base)
    model = GLMForConditionalGeneration.from_pretrained(args.base).to(device).train()
    if world > 1:
        shard(model)
    if rank == 0:
        local = sum(getattr(p, "_local_tensor", p).numel() for p in model.parameters())
        print(f"process 0 holds {local:,} of {model.num_parameters():,} parameter values", flush=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    losses = []
    for batch in global_batches(tokenizer, args.steps, args.global_batch, args.row_length, args.seed):
        batch = {name: value.to(device) for name, value in batch.items()}
        losses.append(train_step(model, optimizer, batch, rank, world))
        if rank == 0:
            print(f"step {len(losses)}: loss {losses[-1]:.4f}", flush=True)

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=options) if world > 1 else model.state_dict()
    if rank == 0:
        full = GLMForConditionalGeneration(model.config)
        full.load_state_dict(state)
        full.save_pretrained(args.output)
        tokenizer.save_pretrained(args.output)
        (Path(args.output) / "losses.json").write_text(json.dumps(losses))
    if world > 1:
        dist.destroy_process_group()
    return losses


if __name__ == "__main__":
    main()
