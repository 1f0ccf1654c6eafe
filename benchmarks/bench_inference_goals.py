"""Issue 28's inference goals in one table from one run: decode against the roofline and GPT-2 (goal 1), int4
decode against fp32 and its answer perplexity (goal 2), and `glm-hf demo`'s time and exact match over seeds
(goal 3). Every ratio is measured in this run; nothing is asserted.

1. Decode: the glm-large-sized `GLMForCausalLM` and GPT-2 of `bench_decode.py` (hidden 1024, 24 layers, vocab
   30592, fp32, random weights), greedy generate() of `--new-tokens` tokens after a prompt of `--prompt` ids, eager
   (dynamic cache) and compiled (transformers' static-cache compilation), batch 1 and 8, medians of `--repeats`
   runs after a warm-up, configurations interleaved. GLM runs with its linear layers packed by
   `glm_hf.pack_for_cpu`; GPT-2 both packed the same way (same kernels: the architecture comparison) and as
   transformers ships it. The roofline is `bench_decode.py`'s kernel: the fastest of `F.linear` and oneDNN-packed
   matrix-vector sweeps (x of batch 1) over the model's own 97 weight matrices, chosen from `--roofline-passes`
   passes each; that kernel's passes are then taken between the decode runs of each batch size (3 per round), and
   the roofline is their best pass (strict) and their median pass (the statistic decode tokens/s use); batch 8's
   is 8x batch 1's.
2. int4: the same GLM quantized to W4A8 (`GLMQuantizationConfig(bits=4, activations="dynamic_int8")`, output
   layer in fp32), eager decode at batch 1 against fp32 as loaded and fp32 packed, and W4A8 with its fp32 output
   layer packed; answer perplexity of the held-out facts (teacher-forced blank infilling) of the first demo run's
   model, W4A8 / fp32.
3. Demo: `glm-hf demo --seed S` for each of `--demo-seeds` (a subprocess each; the whole command's wall time) and
   the held-out exact match its model card reports.

    python benchmarks/bench_inference_goals.py          # about 25 minutes on 2 cores
    python benchmarks/bench_inference_goals.py --demo-seeds --perplexity-model glm-demo   # goals 1 and 2 only
    python benchmarks/bench_inference_goals.py --layers 2 --hidden 64 --heads 4 --vocab 1000 --new-tokens 8 \\
        --repeats 1 --demo-seeds 0 --demo-steps 20    # a smoke test
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import transformers
from bench_decode import (
    Decoder,
    InterleavedRoofline,
    build_models,
    cpu_name,
    decode_configurations,
    fastest_kernel,
    markdown_table,
    matrix_vector_gbps,
    measure_decode,
    n_bytes,
    step_matrices,
)
from bench_quantization import answer_perplexity, quantized_copy
from bench_vs_gpt2 import random_ids

from glm_hf import GLMForConditionalGeneration, GLMQuantizationConfig, GLMTokenizer, corpus, pack_for_cpu, quantize

W4A8 = {"bits": 4, "activations": "dynamic_int8"}
DEMO_TIME_GOAL_S = 300.0
EXACT_MATCH = re.compile(r"exact match \*\*([0-9.]+)\*\*")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=30592)
    parser.add_argument("--positions", type=int, default=1024)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--roofline-passes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--demo-seeds", type=int, nargs="*", default=[0, 1, 2], help="none: skip goal 3")
    parser.add_argument("--demo-steps", type=int, default=None, help="--max-steps for the demo (default: its own)")
    parser.add_argument(
        "--perplexity-model",
        type=Path,
        default=None,
        help="a glm-hf demo folder for goal 2's perplexity row when "
        "--demo-seeds is empty (default: the first demo run's folder)",
    )
    return parser.parse_args(argv)


def decode_rates(
    decoders: list[Decoder],
    prompt: torch.Tensor,
    args: argparse.Namespace,
    extra_runs: dict[str, Callable[[], float]] | None = None,
) -> dict[str, float]:
    """Decode tokens/s by configuration label (0.0 for a configuration that failed, with its error printed)."""
    records = measure_decode(decoders, prompt, args.new_tokens, args.repeats, extra_runs)
    rates = {}
    for name, record in records.items():
        if record.error:
            print(f"- {name} failed: {record.error}")
        rates[name] = 0.0 if record.error else record.tokens_per_second(args.new_tokens - 1, prompt.shape[0])
    return rates


def row(goal: str, metric: str, value: float, reference: float, target: str, unit: str = "tok/s") -> tuple:
    """A table row: what was measured, against what, the ratio, the target and whether it is met."""
    ratio = value / reference if reference else float("nan")
    bound = float(target.split()[-1].rstrip("×"))
    met = ratio >= bound if target.startswith("≥") else ratio <= bound
    return (
        goal,
        metric,
        f"{value:.4g} {unit}",
        f"{reference:.4g} {unit}",
        f"{ratio:.3f}",
        target,
        "yes" if met else "NO",
    )


def goal_decode(glm, gpt2, args: argparse.Namespace) -> list[tuple]:
    """Goal 1's rows; `glm` and `gpt2` are packed copies' originals (left unpacked)."""
    matrices = step_matrices(glm)
    kernels = matrix_vector_gbps(matrices, args.roofline_passes)
    kernel, _ = fastest_kernel(kernels)
    figures = ", ".join(f"{k} {v.best:.1f} (median {v.median:.1f}) GB/s" for k, v in kernels.items())
    print(f"roofline kernels: {figures} -> {kernel}", flush=True)
    models = {
        ("GLM", "packed"): pack_for_cpu(copy.deepcopy(glm)),
        ("GPT-2", "packed"): pack_for_cpu(copy.deepcopy(gpt2)),
        ("GPT-2", "plain"): gpt2,
    }
    decoders = decode_configurations(models, skip_compile=False)
    generator = torch.Generator().manual_seed(args.seed)
    rows = []
    for batch in (1, 8):
        prompt = random_ids(generator, args.vocab, batch, args.prompt)
        during = InterleavedRoofline(matrices, kernel)
        rates = decode_rates(decoders, prompt, args, {"roofline": during})
        bandwidth = during.bandwidth()
        rooflines = {  # tok/s at batch 1 from the fastest and from the median pass between the decode runs
            f"best pass, {bandwidth.best:.1f} GB/s": bandwidth.best * 1e9 / n_bytes(matrices),
            f"median pass, {bandwidth.median:.1f} GB/s": bandwidth.median * 1e9 / n_bytes(matrices),
        }
        for mode in ("eager", "compiled"):
            glm_rate = rates[f"GLM packed {mode}"]
            for which, roofline in rooflines.items():
                metric = f"decode b{batch} {mode}: GLM (packed) / {batch}× roofline ({which}, {kernel})"
                rows.append(row("1", metric, glm_rate, batch * roofline, "≥ 0.90" if batch == 1 else "≥ 0.60"))
            if batch == 1:
                for layout, shipped in (("packed", "packed the same way"), ("plain", "as transformers ships it")):
                    metric = f"decode b1 {mode}: GLM (packed) / GPT-2 {shipped}"
                    rows.append(row("1", metric, glm_rate, rates[f"GPT-2 {layout} {mode}"], "≥ 1.0"))
    return rows


def goal_int4_speed(glm, args: argparse.Namespace) -> list[tuple]:
    """Goal 2's speed rows: W4A8 at batch 1 against fp32 as loaded and packed."""
    w4a8 = quantize(copy.deepcopy(glm), GLMQuantizationConfig(**W4A8))
    w4a8_packed = pack_for_cpu(copy.deepcopy(w4a8))  # only the fp32 output layer is packed
    models = {
        ("fp32", "plain"): glm,
        ("fp32", "packed"): pack_for_cpu(copy.deepcopy(glm)),
        ("W4A8", "plain"): w4a8,
        ("W4A8", "packed output layer"): w4a8_packed,
    }
    decoders = decode_configurations(models, skip_compile=True)
    rates = decode_rates(
        decoders, random_ids(torch.Generator().manual_seed(args.seed), args.vocab, 1, args.prompt), args
    )
    w4a8_rate = rates["W4A8 plain eager"]
    return [
        row("2", "decode b1 eager: W4A8 / fp32 as loaded", w4a8_rate, rates["fp32 plain eager"], "≥ 1.5"),
        row("2", "decode b1 eager: W4A8 / fp32 packed", w4a8_rate, rates["fp32 packed eager"], "≥ 1.5"),
        row(
            "2",
            "decode b1 eager: W4A8 with packed output layer / fp32 packed",
            rates["W4A8 packed output layer eager"],
            rates["fp32 packed eager"],
            "≥ 1.5",
        ),
    ]


def run_demo(seed: int, folder: Path, steps: int | None) -> tuple[float, float]:
    """`glm-hf demo --seed SEED` in a subprocess: its wall time (s) and the exact match its model card reports."""
    command = ["glm-hf", "demo", "--seed", str(seed), "--output", str(folder)]
    if steps is not None:
        command += ["--max-steps", str(steps)]
    start = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if finished.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{finished.stderr[-2000:]}")
    found = EXACT_MATCH.search((folder / "README.md").read_text(encoding="utf-8"))
    if found is None:
        raise RuntimeError(f"{folder}/README.md reports no exact match")
    return seconds, float(found.group(1))


def goal_demo(args: argparse.Namespace, scratch: Path) -> tuple[list[tuple], list[tuple]]:
    """Goal 3's rows and goal 2's perplexity row (from the first seed's model)."""
    runs = {seed: run_demo(seed, scratch / f"demo-{seed}", args.demo_steps) for seed in args.demo_seeds}
    for seed, (seconds, exact) in runs.items():
        print(f"demo seed {seed}: {seconds:.0f} s, exact match {exact:.3f}", flush=True)
    times = [seconds for seconds, _ in runs.values()]
    exact = [value for _, value in runs.values()]
    seeds = " ".join(map(str, runs))
    spread = f"min {min(exact):.3f}, max {max(exact):.3f}"
    demo_rows = [
        row(
            "3",
            f"glm-hf demo whole command, slowest of seeds {seeds} / 5 min",
            max(times),
            DEMO_TIME_GOAL_S,
            "≤ 1.0",
            "s",
        ),
        row(
            "3",
            f"held-out exact match, mean of seeds {seeds} ({spread}) / 0.40",
            statistics.mean(exact),
            0.40,
            "≥ 1.0",
            "",
        ),
    ]
    return demo_rows, perplexity_row(scratch / f"demo-{args.demo_seeds[0]}")


def perplexity_row(folder: Path) -> list[tuple]:
    """Goal 2's quality row: answer perplexity of the demo's held-out facts, W4A8 / fp32, on a demo folder."""
    tokenizer = GLMTokenizer.from_pretrained(folder)
    base = GLMForConditionalGeneration.from_pretrained(folder).eval()
    _, held_out = corpus.split_facts()
    fp32 = answer_perplexity(base, tokenizer, held_out)
    int4 = answer_perplexity(quantized_copy(base, W4A8), tokenizer, held_out)
    return [row("2", f"answer perplexity on the demo model {folder.name}: W4A8 / fp32", int4, fp32, "≤ 1.03", "")]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    transformers.logging.set_verbosity_error()
    started = time.perf_counter()
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
        f"CPU {cpu_name()} ({os.cpu_count()} logical cores)",
        flush=True,
    )
    rows, perplexity_rows, demo_rows = [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        if args.demo_seeds:
            demo_rows, perplexity_rows = goal_demo(args, Path(scratch))
        elif args.perplexity_model is not None:
            perplexity_rows = perplexity_row(args.perplexity_model)
        glm, gpt2 = build_models(args.vocab, args.hidden, args.layers, args.heads, args.positions, args.seed)
        rows += goal_decode(glm, gpt2, args)
        del gpt2
        rows += goal_int4_speed(glm, args) + perplexity_rows + demo_rows
    header = ("goal", "metric", "measured", "reference", "ratio", "target", "met")
    print("\n" + markdown_table(header, rows) + "\n")
    print(f"total benchmark time: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
