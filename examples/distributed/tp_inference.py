"""Tensor-parallel GLM inference: each process holds 1/N of every layer's weights and they compute each layer together.

`from_pretrained(folder, distributed_config=DistributedConfig(tp_plan="auto"))` (the same as the older
`tp_plan="auto"` argument) shards the model while loading, each process reading only its own slices, by the
config's `base_model_tp_plan` (Megatron-style): the fused query/key/value projection and the MLP up-projection are
split by output columns (whole attention heads per process; with GeGLU, the same slice of the value and the gate
halves), the attention output and MLP down-projections by input rows, followed by one all-reduce each; the word
embedding is split by vocabulary rows and the LM head by vocabulary columns, gathered before the softmax. Position
tables and LayerNorms are replicated. Every process therefore sees the full logits and picks the same tokens.

The script fills the blank of each prompt greedily and prints prompt and fill on rank 0. `--dump` saves the inputs,
the logits of the prompts and the generated tokens (rank 0), to compare against an unsharded run.

    glm-hf demo --output glm-demo
    torchrun --nproc-per-node 2 examples/distributed/tp_inference.py --model glm-demo           # CPU, gloo
    torchrun --nproc-per-node 4 examples/distributed/tp_inference.py --model glm-10b --dtype bfloat16  # 4 GPUs, nccl

`num_attention_heads` must be divisible by the number of processes (each holds whole heads).
"""

import argparse
import os

import torch
import torch.distributed as dist
from transformers import AutoTokenizer, DistributedConfig

from glm_hf import GLMForConditionalGeneration

DEFAULT_PROMPTS = ["The capital of France is [MASK].", "北京是[MASK]的首都。"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_sharded(folder: str, dtype: torch.dtype = torch.float32) -> GLMForConditionalGeneration:
    """Loads `folder` sharded across the `torchrun` processes by the model's own tensor-parallel plan (this starts
    the process group: gloo on CPU, nccl on CUDA)."""
    model = GLMForConditionalGeneration.from_pretrained(
        folder, dtype=dtype, distributed_config=DistributedConfig(tp_plan="auto")
    )
    heads, world = model.config.num_attention_heads, dist.get_world_size()
    if heads % world:
        raise SystemExit(f"num_attention_heads={heads} cannot be split over {world} processes; use a divisor of it.")
    return model.eval()


@torch.no_grad()
def run(model: GLMForConditionalGeneration, tokenizer, prompts: list[str], max_new_tokens: int) -> dict:
    """The prompts' logits and greedy fills (every rank computes the same full values)."""
    batch = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
    logits = model(**batch).logits
    generated = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
    fills = tokenizer.batch_decode(generated[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return {
        "input_ids": batch["input_ids"].cpu(),
        "attention_mask": batch["attention_mask"].cpu(),
        "logits": logits.float().cpu(),
        "generated": generated.cpu(),
        "fills": [fill.strip() for fill in fills],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="glm-demo", help="a saved glm-hf folder (model and tokenizer)")
    parser.add_argument("--prompt", action="append", help="a text with a blank; repeat for several (default: two)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--dump", help="rank 0 saves inputs, logits and generated tokens here (torch.save)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    model = load_sharded(args.model, DTYPES[args.dtype])
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    result = run(model, tokenizer, args.prompt or DEFAULT_PROMPTS, args.max_new_tokens)
    if dist.get_rank() == 0:
        print(f"{dist.get_world_size()} tensor-parallel processes, {model.device}, {args.dtype}")
        for prompt, fill in zip(args.prompt or DEFAULT_PROMPTS, result["fills"], strict=True):
            print(f"{prompt} -> {fill}")
        if args.dump:
            torch.save(result, args.dump)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
