"""Pipeline bubble vs micro-batch count: GPipe and 1F1B on 2 stages, measured against the theoretical (p-1)/(m+p-1).

Splits a GLM (hidden 256, 5 layers: 3 on stage 0 with the embeddings, 2 on stage 1 with the LM head, whose
vocabulary is sized so that the two stages balance; separate LM head, so no tied-embedding all-reduce enters the
step) with `examples/distributed/pipeline_parallel.py` and trains on a constant global batch of `--batch`
sequences of `--seq-length` tokens, cut into m = 1, 2, 4, 8, 16 micro-batches (1F1B needs m >= p). One process
per stage, one thread each.

Measured bubble of a stage: `1 - busy / step`, where `busy` is the time the stage spends inside its forward and
backward computations (`PipelineStage.forward_one_chunk` / `backward_one_chunk`, summed over the micro-batches:
waiting for a neighbour's activations or gradients is outside them) and `step` is the wall time of the whole
pipelined step (from a barrier to the last stage to finish). The table gives the mean over the stages and each
stage's value, medians over `--repeats` steps after one warm-up step (the first step also infers the stages'
tensor shapes). Theory assumes equal stage times and free communication: a step lasts m + p - 1 micro-batch
slots of which each stage is busy for m.

    torchrun --nproc-per-node 2 benchmarks/bench_pipeline.py [--batch 32] [--seq-length 128] [--repeats 5]
"""

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import torch.distributed as dist

from glm_hf import GLMConfig, GLMForConditionalGeneration
from glm_hf.demo.run import load_demo_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "distributed"))
from pipeline_parallel import Pipeline, build_pipeline, training_batches

MICROBATCHES = (1, 2, 4, 8, 16)
# The demo tokenizer's 2048 tokens, padded (as GLM pads its vocabulary) so that the LM head costs about one layer:
# then 3 layers + embeddings on stage 0 and 2 layers + LM head on stage 1 take about the same time.
VOCAB_SIZE = 3072


class BusyTimer:
    """Adds up the time a pipeline stage spends in its forward and backward computations."""

    def __init__(self, pipeline: Pipeline):
        self.seconds = 0.0
        stage = pipeline.stage
        stage.forward_one_chunk = self.timed(stage.forward_one_chunk)
        stage.backward_one_chunk = self.timed(stage.backward_one_chunk)

    def timed(self, method: Callable) -> Callable:
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return run


def measure(
    model: GLMForConditionalGeneration, batches: list[dict], schedule: str, microbatches: int
) -> tuple[float, list[float]]:
    """Median step wall time and each stage's median busy time over `batches[1:]` (`batches[0]` warms up)."""
    pipeline = build_pipeline(model, schedule, microbatches, torch.device("cpu"))
    timer = BusyTimer(pipeline)
    steps, busy = [], []
    for index, batch in enumerate(batches):
        pipeline.module.zero_grad(set_to_none=True)
        dist.barrier()
        timer.seconds = 0.0
        start = time.perf_counter()
        pipeline.train_step(batch)
        elapsed = torch.tensor([time.perf_counter() - start])
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        stage_busy = [torch.zeros(1) for _ in range(dist.get_world_size())]
        dist.all_gather(stage_busy, torch.tensor([timer.seconds]))
        if index > 0:
            steps.append(float(elapsed))
            busy.append([float(seconds) for seconds in stage_busy])
    return statistics.median(steps), [statistics.median(column) for column in zip(*busy, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32, help="global batch (sequences), constant over m")
    parser.add_argument("--seq-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per configuration")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    stages = dist.get_world_size()

    tokenizer = load_demo_tokenizer()
    torch.manual_seed(0)
    config = GLMConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=256,
        num_hidden_layers=5,
        num_attention_heads=4,
        max_position_embeddings=args.seq_length,
        tie_word_embeddings=False,
    )
    model = GLMForConditionalGeneration(config).train()
    batches = training_batches(tokenizer, args.repeats + 1, args.batch, args.seq_length)

    rows = []
    for microbatches in MICROBATCHES:  # both schedules per m, back to back, so load changes hit them alike
        for schedule in ("gpipe", "1f1b"):
            if schedule == "1f1b" and microbatches < stages:
                continue  # 1F1B needs at least one micro-batch per stage (torch refuses fewer)
            step, busy = measure(model, batches, schedule, microbatches)
            bubbles = [1.0 - seconds / step for seconds in busy]
            theory = (stages - 1) / (microbatches + stages - 1)
            rows.append((schedule, microbatches, step, busy, bubbles, theory))
    rows.sort(key=lambda row: row[0] != "gpipe")

    if dist.get_rank() == 0:
        print(f"p = {stages} stages, global batch {args.batch} x {args.seq_length} tokens, 1 thread per stage")
        stage_columns = " ".join(f"{f'busy s{i} (s)':>11}" for i in range(stages))
        bubble_columns = " ".join(f"{f'bubble s{i}':>9}" for i in range(stages))
        print(f"schedule  m   step (s) {stage_columns}  bubble (mean) {bubble_columns}  theory (p-1)/(m+p-1)")
        for schedule, microbatches, step, busy, bubbles, theory in rows:
            busy_cells = " ".join(f"{seconds:11.3f}" for seconds in busy)
            bubble_cells = " ".join(f"{bubble:9.3f}" for bubble in bubbles)
            print(
                f"{schedule:8} {microbatches:2d} {step:10.3f} {busy_cells}  {statistics.mean(bubbles):13.3f} "
                f"{bubble_cells}  {theory:20.3f}"
            )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
