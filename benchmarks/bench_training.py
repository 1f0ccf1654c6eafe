"""Training throughput of GLM on the CPU: the train step against GPT-2 of identical size, packed (padding-free)
against padded SFT batches, and flex attention against SDPA; one table from one run in one process.

Models: as in `bench_decode.py`'s train step: `GLMForCausalLM` (learned 2D positions, pre-LN) and
`GPT2LMHeadModel` with the same vocab, hidden size, layers, heads, max positions, intermediate size (4 * hidden),
activation, tied embeddings, dropout 0, float32, SDPA attention, `model.train()`, random init from the same seed;
`GLMForConditionalGeneration` holds the same weights as the causal head. Each configuration runs once untimed,
then `--repeats` timed rounds in which the configurations alternate, in reversed order every other round
(`bench_vs_gpt2.interleaved`); times are medians, ratios the median of the per-round ratios (both runs of a round
see the same load, so drift and other work on a shared machine largely cancel). `--clock cpu` times runs by this
process's CPU time instead of the wall clock, which other work barely changes when torch runs one thread
(`--threads 1`).

Rows:

1. train step, every position labelled: forward (`use_cache=False`, as TRL calls it) + `loss.backward()` +
   `torch.optim.AdamW.step()` (grads set to None), `--batch` x `--seq` random ordinary ids, labels = input_ids
   (both models shift inside). GLM reads them in its left-to-right layout (`[gMASK] <|startofpiece|>` then the
   text: plain causal attention, SDPA's `is_causal`).
2. train step, GLM's blank-infilling layout: the same step for `GLMForConditionalGeneration` on rows of exactly
   `--seq` tokens built like `bench_vs_gpt2.train_batch` (Part A with 3 `[MASK]` blanks, then the spans, 102 Part B
   tokens; labels -100 on Part A, so only Part B is projected onto the vocabulary); GPT-2 as in row 1.
3. SFT tokens/s, packed against padded: `--sft-docs` documents whose lengths follow a log-normal mix (median
   `--sft-median` tokens, sigma 0.8, clipped to [16, `--sft-max`]; a chat/instruction SFT set's shape), fed
   `--sft-docs-per-step` per step by TRL's own collator (`trl.trainer.sft_trainer.DataCollatorForLanguageModeling`):
   padded (right-padded rows, `attention_mask`) and padding-free (`padding_free=True`: one row, `position_ids`
   restarting at each document, as `SFTConfig(packing=True)` feeds the model). tokens/s = the documents' tokens /
   the time of one pass over all of them (forward + backward + AdamW per step), for the causal head and, for
   reference, GPT-2 (which transformers packs by the same `position_ids` rule).
4. flex attention against SDPA, `--batch` x `--seq`, eval, `torch.no_grad()`: prefill (one forward) of the causal
   head (plain causal) and of the seq2seq head on the blank-infilling rows of row 2 (GLM's prefix-LM mask as a
   `BlockMask`). transformers compiles `flex_attention` itself (`torch.compile`), so the warm-up run holds the
   compilation; its time is reported. The train step with flex is tried once: torch's flex attention has no
   backward on CPU, which the table then says.

Goals (reported, never asserted): train step GLM / GPT-2 <= 1.0 in rows 1 and 2; packed tokens/s >= padded.

Run (CPU; estimated 4-6 minutes on 2 cores, most of it the padded SFT steps and flex compilation):

    python benchmarks/bench_training.py
    python benchmarks/bench_training.py --threads 1 --clock cpu --skip-flex     # steadier on a shared machine
    python benchmarks/bench_training.py --hidden 64 --layers 2 --heads 4 --vocab 1000 --seq 32 --repeats 1 \\
        --sft-docs 8 --sft-median 24 --sft-max 64 --threads 1                          # a smoke test

`--threads N` calls `torch.set_num_threads(N)`; by default torch's own thread count is left as is.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import transformers
from bench_decode import build_models, cpu_name, goal, markdown_table
from bench_vs_gpt2 import interleaved, random_ids, train_batch

from glm_hf import GLMForCausalLM, GLMForConditionalGeneration

GOAL_TRAIN_RATIO = 1.0
GOAL_PACKED_GAIN = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=30592, help="vocab_size (default 30592)")
    parser.add_argument("--hidden", type=int, default=512, help="hidden size (default 512)")
    parser.add_argument("--layers", type=int, default=8, help="layers (default 8)")
    parser.add_argument("--heads", type=int, default=8, help="heads (default 8)")
    parser.add_argument("--positions", type=int, default=1024, help="max position embeddings (default 1024)")
    parser.add_argument("--batch", type=int, default=4, help="train and prefill batch size (default 4)")
    parser.add_argument("--seq", type=int, default=256, help="train and prefill sequence length (default 256)")
    parser.add_argument("--sft-docs", type=int, default=16, help="SFT documents per pass (default 16)")
    parser.add_argument("--sft-docs-per-step", type=int, default=8, help="SFT documents per step (default 8)")
    parser.add_argument("--sft-median", type=int, default=96, help="median SFT document length (default 96)")
    parser.add_argument("--sft-max", type=int, default=384, help="longest SFT document (default 384)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per configuration (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and data (default 0)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    parser.add_argument("--skip-flex", action="store_true", help="leave out the flex attention rows")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="time runs by the wall clock, or by this process's CPU time (steadier on a shared machine with "
        "--threads 1; default wall)",
    )
    args = parser.parse_args(argv)
    if args.seq + 2 > args.positions or args.sft_max + 2 > args.positions:
        parser.error("--seq + 2 and --sft-max + 2 must not exceed --positions.")
    if args.seq <= 102 + 3:
        parser.error("--seq must leave room for the blank-infilling rows' Part A (more than 105 tokens).")
    return args


# --------------------------------------------------------------------------------------------------------------
# Steps


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict) -> Callable[[], None]:
    """A run of one forward + backward + optimizer step on `batch` (which holds the labels), without a KV cache, as
    TRL's `SFTTrainer` calls the model: with a cache, GPT-2 (transformers' masks) reads a padding-free row as one
    sequence, its documents attending to each other."""

    def run() -> None:
        model(**batch, use_cache=False).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return run


def train_pass(model: torch.nn.Module, batches: list[dict]) -> Callable[[], None]:
    """A run of one train step per batch (a pass over the SFT documents)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    steps = [train_step(model, optimizer, batch) for batch in batches]

    def run() -> None:
        for step in steps:
            step()

    return run


def prefill(model: torch.nn.Module, inputs: dict) -> Callable[[], None]:
    """A run of one forward without gradients."""

    def run() -> None:
        with torch.no_grad():
            model(**inputs)

    return run


def on_clock(run: Callable[[], None], clock: str) -> Callable[[], float | None]:
    """`run`, timed by `interleaved` on the wall clock, or returning the CPU time it took (`clock="cpu"`: this
    process's CPU seconds, which other work on a shared machine barely changes when torch runs one thread)."""
    if clock == "wall":
        return run

    def timed() -> float:
        start = time.process_time()
        run()
        return time.process_time() - start

    return timed


def times(runs: dict[str, Callable[[], None]], repeats: int, clock: str) -> dict[str, list[float]]:
    """Per configuration, its times in round order (`bench_vs_gpt2.interleaved`)."""
    return interleaved({name: on_clock(run, clock) for name, run in runs.items()}, repeats)


def median_ratio(numerators: list[float], denominators: list[float]) -> float:
    """The median of the per-round ratios: both runs of a round see the same load, so slow drift cancels."""
    return statistics.median(a / b for a, b in zip(numerators, denominators, strict=True))


# --------------------------------------------------------------------------------------------------------------
# Inputs


def infilling_batch(args: argparse.Namespace, glm: GLMForCausalLM, generator: torch.Generator) -> dict:
    """`bench_vs_gpt2.train_batch`'s blank-infilling rows at `--batch` x `--seq`."""
    layout = argparse.Namespace(
        vocab=args.vocab, train_batch=args.batch, train_seq=args.seq, train_blanks=3, span_tokens=102
    )
    return train_batch(glm, layout, generator)


def sft_documents(args: argparse.Namespace, generator: torch.Generator) -> list[list[int]]:
    """Random ordinary ids in documents of log-normal lengths (median `--sft-median`, sigma 0.8)."""
    normal = torch.randn(args.sft_docs, generator=generator)
    lengths = (args.sft_median * torch.exp(0.8 * normal)).round().clamp(16, args.sft_max).long().tolist()
    return [random_ids(generator, args.vocab, length).tolist() for length in lengths]


def sft_batches(documents: list[list[int]], per_step: int, padding_free: bool) -> list[dict]:
    """The documents in steps of `per_step`, collated by TRL's SFT collator, padded or padding-free."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=padding_free)
    groups = [documents[start : start + per_step] for start in range(0, len(documents), per_step)]
    return [collator([{"input_ids": doc} for doc in group]) for group in groups]


# --------------------------------------------------------------------------------------------------------------
# Measurements


def measure_train_ratio(glm, gpt2, seq2seq, ids, infilling: dict, repeats: int, clock: str) -> dict[str, list]:
    """Step times per round: GLM's causal head and GPT-2 with every position labelled, GLM's seq2seq head on the
    blank-infilling rows."""
    every_position = {"input_ids": ids, "labels": ids}
    runs = {
        "glm": train_pass(glm, [every_position]),
        "gpt2": train_pass(gpt2, [every_position]),
        "glm_infilling": train_pass(seq2seq, [infilling]),
    }
    return times(runs, repeats, clock)


def measure_sft(glm, gpt2, documents: list[list[int]], per_step: int, repeats: int, clock: str) -> dict[str, list]:
    """Pass times per round over the SFT documents, padded and padding-free, for both models."""
    padded = sft_batches(documents, per_step, padding_free=False)
    packed = sft_batches(documents, per_step, padding_free=True)
    runs = {}
    for name, model in (("glm", glm), ("gpt2", gpt2)):
        runs[f"{name}_padded"] = train_pass(model, padded)
        runs[f"{name}_packed"] = train_pass(model, packed)
    return times(runs, repeats, clock)


def measure_flex(glm, seq2seq, ids, infilling: dict, repeats: int, clock: str) -> tuple[dict, dict, str]:
    """Prefill times per round with SDPA and flex attention, the flex warm-ups' wall times (compilation) and what a
    flex train step does on this device."""
    infilling_inputs = {name: value for name, value in infilling.items() if name != "labels"}
    results, warm_ups = {}, {}
    for attention in ("sdpa", "flex_attention"):
        for model in (glm, seq2seq):
            model.eval().set_attn_implementation(attention)
        runs = {
            f"causal_{attention}": prefill(glm, {"input_ids": ids, "use_cache": False}),
            f"infilling_{attention}": prefill(seq2seq, infilling_inputs),
        }
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            warm_ups[name] = time.perf_counter() - start
        results.update(times(runs, repeats, clock))
    glm.train()
    try:
        glm(input_ids=ids, labels=ids).loss.backward()
        train_note = "runs"
    except (NotImplementedError, RuntimeError) as error:  # the table says what this device does
        train_note = f"not available: {type(error).__name__}: {str(error).splitlines()[0][:90]}"
    finally:
        glm.zero_grad(set_to_none=True)
        for model in (glm, seq2seq):
            model.set_attn_implementation("sdpa")
    return results, warm_ups, train_note


# --------------------------------------------------------------------------------------------------------------
# Report


def ratio_row(metric: str, glm: list[float], reference: list[float], label: str, goal_cell: str) -> tuple:
    """A table row: GLM's median time, the reference's, and the median per-round ratio."""
    glm_ms, reference_ms = statistics.median(glm) * 1e3, statistics.median(reference) * 1e3
    ratio = median_ratio(glm, reference)
    return (metric, f"{glm_ms:.0f} ms", f"{label} {reference_ms:.0f} ms", f"{ratio:.3f}", goal_cell.format(ratio))


def train_rows(train: dict[str, list[float]], size: str) -> list[tuple]:
    rows = []
    for label, key in (("every position labelled", "glm"), ("GLM blank-infilling layout", "glm_infilling")):
        ratio = median_ratio(train[key], train["gpt2"])
        goal_cell = goal(ratio, GOAL_TRAIN_RATIO, at_least=False)
        rows.append(
            ratio_row(f"train step fwd+bwd+AdamW, {size}, {label}", train[key], train["gpt2"], "GPT-2", goal_cell)
        )
    return rows


def sft_rows(sft: dict[str, list[float]], tokens: int) -> list[tuple]:
    rows = []
    for name, label in (("glm", "GLM"), ("gpt2", "GPT-2")):
        packed, padded = sft[f"{name}_packed"], sft[f"{name}_padded"]
        gain = median_ratio(padded, packed)  # tokens/s packed over padded = time padded over packed
        packed_rate, padded_rate = tokens / statistics.median(packed), tokens / statistics.median(padded)
        rows.append(
            (f"SFT tokens/s, {label}: packed (padding-free) vs padded", f"{packed_rate:.0f} tok/s")
            + (f"padded {padded_rate:.0f} tok/s", f"{gain:.2f}", goal(gain, GOAL_PACKED_GAIN, at_least=True))
        )
    return rows


def flex_rows(flex: dict[str, list[float]], size: str) -> list[tuple]:
    rows = []
    for name, label in (("causal", "causal head (plain causal)"), ("infilling", "seq2seq head (prefix-LM)")):
        metric = f"prefill {size}, {label}: flex vs SDPA"
        rows.append(ratio_row(metric, flex[f"{name}_flex_attention"], flex[f"{name}_sdpa"], "SDPA", "–"))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    started = time.perf_counter()
    glm, gpt2 = build_models(args.vocab, args.hidden, args.layers, args.heads, args.positions, args.seed)
    seq2seq = GLMForConditionalGeneration(glm.config)
    seq2seq.load_state_dict(glm.state_dict())
    seq2seq.set_attn_implementation("sdpa")
    for model in (glm, gpt2, seq2seq):
        model.train()
    generator = torch.Generator().manual_seed(args.seed)
    ids = random_ids(generator, args.vocab, args.batch, args.seq)
    infilling = infilling_batch(args, glm, generator)
    documents = sft_documents(args, generator)
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
        f"python {sys.version.split()[0]}, CPU {cpu_name()} ({os.cpu_count()} logical cores)"
    )
    print(
        f"models: vocab {args.vocab}, hidden {args.hidden}, layers {args.layers}, heads {args.heads}, positions "
        f"{args.positions}; batch {args.batch} x {args.seq}; {args.clock} clock; repeats {args.repeats} (medians "
        "after one warm-up)",
        flush=True,
    )
    size = f"{args.batch}×{args.seq}"

    t = time.perf_counter()
    rows = train_rows(measure_train_ratio(glm, gpt2, seq2seq, ids, infilling, args.repeats, args.clock), size)
    print(f"train steps measured in {time.perf_counter() - t:.1f}s", flush=True)

    t = time.perf_counter()
    tokens = sum(len(doc) for doc in documents)
    rows += sft_rows(measure_sft(glm, gpt2, documents, args.sft_docs_per_step, args.repeats, args.clock), tokens)
    print(f"SFT passes measured in {time.perf_counter() - t:.1f}s", flush=True)

    notes = []
    if not args.skip_flex:
        t = time.perf_counter()
        flex, warm_ups, train_note = measure_flex(glm, seq2seq, ids, infilling, args.repeats, args.clock)
        rows += flex_rows(flex, size)
        rows.append((f"train step {size} with flex attention", train_note, "–", "–", "–"))
        for name in ("causal", "infilling"):
            notes.append(f"flex warm-up (compilation), {name}: {warm_ups[f'{name}_flex_attention']:.1f}s wall")
        print(f"flex measured in {time.perf_counter() - t:.1f}s", flush=True)

    print("\n" + markdown_table(("metric", "GLM", "reference", "ratio", "goal"), rows) + "\n")
    lengths = sorted(len(doc) for doc in documents)
    padded = sft_batches(documents, args.sft_docs_per_step, padding_free=False)
    slots = sum(int(batch["attention_mask"].numel()) for batch in padded)
    print(
        f"- SFT documents: {len(documents)}, {tokens} tokens, lengths {lengths[0]}..{lengths[-1]} (median "
        f"{lengths[len(lengths) // 2]}), {args.sft_docs_per_step} per step; padded steps hold {slots} slots "
        f"({tokens / slots:.0%} real tokens)."
    )
    print("- ratio: the median of the per-round ratios (both runs of a round see the same load).")
    for note in notes:
        print(f"- {note}")
    print(f"\ntotal benchmark time: {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
