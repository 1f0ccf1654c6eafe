"""Speed of GLM (`glm_hf.GLMForConditionalGeneration`) against a GPT-2 of identical size, in one process.

Both models get the same sizes (vocab, hidden size, layers, heads, max positions, intermediate = 4 * hidden),
the same activation (tanh-approximated GeLU), tied input/output embeddings, dropout 0, float32 weights, SDPA
attention and the same seed. GLM has one extra table (block positions), which is the only size difference.

Measured (median over repeats; GLM and GPT-2 runs alternate within each repeat to cancel slow drift, and every
measurement is preceded by one untimed warm-up run per model):

1. prefill: one forward over a prompt of `--prompt-len` tokens at batch 1, no cache kept, eval mode,
   `torch.no_grad()`. GLM's prompt is a complete generation layout (text, `[gMASK]`, `<|startofpiece|>`), so its
   positions and mask are derived from the tokens like in `generate()`; GPT-2 gets the same token ids.
2. decode: `generate()` of exactly `--new-tokens` tokens, greedy, with KV cache, at batch 1 and 8
   (`--decode-batches`), equal-length prompts, no padding. Exactly N tokens are produced by
   `min_new_tokens = max_new_tokens = N` (end-of-sequence ids are suppressed until the end). GLM's prompt is
   `--prompt-len - 2` random ids plus `[gMASK]`; its `generate()` appends `<|startofpiece|>`, so both models
   prefill exactly P tokens (GPT-2 gets the same P ids, that last one included). Two rates are shown:
   "decode" counts only the steps after prefill (a logits processor timestamps the first generated token; rate
   = (N - 1) * batch / time from there to the end), "generate" is N * batch / whole `generate()` call.
3. train step: `loss.backward()` after a forward at `--train-seq` tokens (default 512), batch `--train-batch`
   (default 4), `model.train()`, grads zeroed (set to None) after each step; no optimizer step. GLM gets a
   realistic blank-infilling layout built with `glm_hf.model.blank_infilling.infilling_example`: Part A of
   `--train-seq - span_tokens` tokens with `--train-blanks` `[MASK]` blanks, then the spans
   (`<|startofpiece|> span`) filling the sequence up to exactly `--train-seq`; inputs are `input_ids`, `labels`
   (-100 on Part A), explicit 2D `position_ids` and `attention_mask` = Part A lengths `[batch]` (the compact
   form). GPT-2 gets `input_ids` and `labels` of the same shape (the same ids, labels = inputs; GPT-2 shifts).
   GLM's loss covers Part B only, so in training it projects only the labelled positions onto the vocabulary;
   a second row labels every GLM position too, which is the same output-layer work GPT-2 does.

Goals (the "goal" column; they are reported, never asserted): decode tokens/s of GLM >= 0.95x GPT-2's, train
step time of GLM <= 1.05x GPT-2's. Prefill has no goal.

Run (CPU, the default sizes take about 2-3 minutes on 2 cores):

    python benchmarks/bench_vs_gpt2.py
    python benchmarks/bench_vs_gpt2.py --hidden 256 --layers 4 --repeats 3      # quicker
    python benchmarks/bench_vs_gpt2.py --profile                                # + torch.profiler tables

`--profile` additionally profiles one decode step (batch 1, a cache of `--prompt-len` tokens) and one train step
of each model with `torch.profiler` and prints the top operators by self CPU time. `--threads N` calls
`torch.set_num_threads(N)`; by default torch's own thread count is left as is.
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
from transformers import GPT2Config, GPT2LMHeadModel, LogitsProcessor, LogitsProcessorList
from transformers.cache_utils import DynamicCache

from glm_hf import GLMConfig, GLMForConditionalGeneration
from glm_hf.model.blank_infilling import batch_infilling, generation_layout, infilling_example
from glm_hf.model.transformers_compat import CACHE_FIELD

FIRST_ORDINARY_ID = 9  # GLM's special tokens occupy ids 0..8 by default


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=32000, help="vocab_size (default 32000)")
    parser.add_argument("--hidden", type=int, default=512, help="hidden size (default 512)")
    parser.add_argument("--layers", type=int, default=8, help="number of layers (default 8)")
    parser.add_argument("--heads", type=int, default=8, help="attention heads (default 8)")
    parser.add_argument("--positions", type=int, default=1024, help="max position embeddings (default 1024)")
    parser.add_argument("--prompt-len", type=int, default=256, help="prompt length P (default 256)")
    parser.add_argument("--new-tokens", type=int, default=128, help="tokens generated per row (default 128)")
    parser.add_argument("--decode-batches", default="1,8", help="comma-separated decode batch sizes (default 1,8)")
    parser.add_argument("--train-seq", type=int, default=512, help="train sequence length (default 512)")
    parser.add_argument("--train-batch", type=int, default=4, help="train batch size (default 4)")
    parser.add_argument("--train-blanks", type=int, default=3, help="[MASK] blanks per GLM train row (default 3)")
    parser.add_argument(
        "--span-tokens", type=int, default=102, help="GLM Part B tokens per train row, sop included (default 102)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats for prefill and train (default 5)")
    parser.add_argument("--decode-repeats", type=int, default=2, help="timed generate() repeats (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="torch.manual_seed for weights and data (default 0)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    parser.add_argument("--profile", action="store_true", help="also profile a decode step and a train step")
    parser.add_argument("--profile-rows", type=int, default=15, help="rows per profiler table (default 15)")
    parser.add_argument("--plain", action="store_true", help="plain-text table even if `rich` is installed")
    args = parser.parse_args(argv)
    args.decode_batches = [int(b) for b in args.decode_batches.split(",") if b.strip()]
    if args.prompt_len < 3:
        parser.error("--prompt-len must be at least 3 (text, [gMASK], <|startofpiece|>).")
    if args.prompt_len + args.new_tokens > args.positions:
        parser.error("--prompt-len + --new-tokens must not exceed --positions (GPT-2's position table).")
    if not 0 < args.span_tokens - args.train_blanks < args.train_seq - args.train_blanks:
        parser.error("--span-tokens must leave room for the blanks' spans and a Part A holding the blanks.")
    return args


# --------------------------------------------------------------------------------------------------------------
# Models


def build_models(args: argparse.Namespace) -> tuple[GLMForConditionalGeneration, GPT2LMHeadModel]:
    glm_config = GLMConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=4 * args.hidden,
        max_position_embeddings=args.positions,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    gpt2_config = GPT2Config(
        vocab_size=args.vocab,
        n_embd=args.hidden,
        n_layer=args.layers,
        n_head=args.heads,
        n_inner=4 * args.hidden,
        n_positions=args.positions,
        activation_function=glm_config.hidden_act,  # GPT-2's default "gelu_new" is the same function, computed slower
        layer_norm_epsilon=glm_config.layer_norm_eps,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=glm_config.eos_token_id,
        eos_token_id=glm_config.eos_token_id,
        pad_token_id=glm_config.pad_token_id,
    )
    torch.manual_seed(args.seed)
    glm = GLMForConditionalGeneration(glm_config).float().eval()
    torch.manual_seed(args.seed)
    gpt2 = GPT2LMHeadModel(gpt2_config).float().eval()
    for model in (glm, gpt2):
        model.set_attn_implementation("sdpa")
    return glm, gpt2


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # tied weights are counted once by parameters()


# --------------------------------------------------------------------------------------------------------------
# Inputs


def random_ids(generator: torch.Generator, vocab: int, *shape: int) -> torch.Tensor:
    """Ordinary token ids (never one of GLM's special ids 0..8)."""
    return torch.randint(FIRST_ORDINARY_ID, vocab, shape, generator=generator)


def prefill_inputs(glm: GLMForConditionalGeneration, args: argparse.Namespace, generator: torch.Generator) -> dict:
    """A full generation layout of exactly P tokens: P - 2 words, [gMASK], <|startofpiece|>."""
    cfg = glm.config
    text = random_ids(generator, args.vocab, 1, args.prompt_len - 2)
    ids = torch.cat([text, torch.tensor([[cfg.gmask_token_id, cfg.sop_token_id]])], dim=-1)
    return {"input_ids": ids}


def decode_prompt(glm: GLMForConditionalGeneration, args: argparse.Namespace, batch: int, generator) -> torch.Tensor:
    """`batch` equal-length GLM prompts of P - 2 words and [gMASK]; generate() appends <|startofpiece|>, making P."""
    text = random_ids(generator, args.vocab, batch, args.prompt_len - 2)
    return torch.cat([text, torch.full((batch, 1), glm.config.gmask_token_id)], dim=-1)


def train_batch(glm: GLMForConditionalGeneration, args: argparse.Namespace, generator: torch.Generator) -> dict:
    """GLM blank-infilling rows of exactly `--train-seq` tokens, built with `infilling_example`."""
    cfg = glm.config
    n_blanks, seq = args.train_blanks, args.train_seq
    span_total = args.span_tokens - n_blanks  # span words, without their <|startofpiece|>
    part_a_len = seq - args.span_tokens
    rows = []
    for _ in range(args.train_batch):
        # Span lengths: an even split of span_total, remainder on the first spans.
        lengths = [span_total // n_blanks + (k < span_total % n_blanks) for k in range(n_blanks)]
        spans = [random_ids(generator, args.vocab, n).tolist() for n in lengths]
        part_a = random_ids(generator, args.vocab, part_a_len).tolist()
        slots = torch.randperm(part_a_len - 1, generator=generator)[:n_blanks].sort().values.tolist()
        for slot in slots:
            part_a[slot] = cfg.mask_token_id
        rows.append(infilling_example(part_a, spans, cfg.blank_token_ids, cfg.sop_token_id, cfg.eop_token_id))
    if any(len(r["input_ids"]) != seq for r in rows):
        raise RuntimeError("the blank-infilling layout must fill the train sequence exactly")
    return batch_infilling(rows, cfg.pad_token_id)


# --------------------------------------------------------------------------------------------------------------
# Timing


def interleaved(runs: dict[str, Callable[[], float | None]], repeats: int) -> dict[str, list[float]]:
    """Warms each run up once, then times `repeats` rounds, alternating which model goes first each round.

    A run returns None (its wall time is measured here) or its own measured value (seconds)."""
    names = list(runs)
    for name in names:
        runs[name]()
    results: dict[str, list[float]] = {name: [] for name in names}
    for i in range(repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            value = runs[name]()
            results[name].append(time.perf_counter() - start if value is None else value)
    return results


class _FirstTokenClock(LogitsProcessor):
    """Records when the first logits are processed, i.e. when prefill has finished."""

    def __init__(self) -> None:
        self.first: float | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.first is None:
            self.first = time.perf_counter()
        return scores


def generate_run(model, prompt: torch.Tensor, new_tokens: int, expected_len: int, out: list) -> Callable[[], float]:
    """A run that generates exactly `new_tokens` tokens and returns the whole call's time; it also appends
    (whole time, time after prefill) to `out`."""

    def run() -> float:
        clock = _FirstTokenClock()
        start = time.perf_counter()
        sequences = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=model.config.pad_token_id,
            logits_processor=LogitsProcessorList([clock]),
        )
        end = time.perf_counter()
        if sequences.shape[-1] != expected_len:
            raise RuntimeError(
                f"{type(model).__name__} produced {sequences.shape[-1]} tokens, expected {expected_len}"
            )
        out.append((end - start, end - clock.first))
        return end - start

    return run


def measure_prefill(glm, gpt2, args, generator) -> dict[str, float]:
    inputs = prefill_inputs(glm, args, generator)

    def forward(model):
        def run() -> None:
            with torch.no_grad():
                model(**inputs, use_cache=False)

        return run

    times = interleaved({"glm": forward(glm), "gpt2": forward(gpt2)}, args.repeats)
    return {name: statistics.median(values) for name, values in times.items()}


def measure_decode(glm, gpt2, args, batch: int, generator) -> dict[str, dict[str, float]]:
    glm_prompt = decode_prompt(glm, args, batch, generator)
    # GPT-2 gets the same ids, with the <|startofpiece|> that GLM's generate() appends, so both prefill P tokens.
    gpt2_prompt = torch.cat([glm_prompt, torch.full((batch, 1), glm.config.sop_token_id)], dim=-1)
    expected = args.prompt_len + args.new_tokens
    records: dict[str, list] = {"glm": [], "gpt2": []}
    runs = {
        "glm": generate_run(glm, glm_prompt, args.new_tokens, expected, records["glm"]),
        "gpt2": generate_run(gpt2, gpt2_prompt, args.new_tokens, expected, records["gpt2"]),
    }
    interleaved(runs, args.decode_repeats)
    result = {}
    for name, recs in records.items():
        timed = recs[1:]  # the first record is the warm-up
        whole = statistics.median(r[0] for r in timed)
        after_prefill = statistics.median(r[1] for r in timed)
        result[name] = {
            "decode_tps": (args.new_tokens - 1) * batch / after_prefill,
            "generate_tps": args.new_tokens * batch / whole,
        }
    return result


def train_step(model, inputs: dict) -> Callable[[], None]:
    def run() -> None:
        loss = model(**inputs).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    return run


def measure_train(glm, gpt2, args, generator) -> dict[str, float]:
    glm_inputs = train_batch(glm, args, generator)
    gpt2_inputs = {"input_ids": glm_inputs["input_ids"], "labels": glm_inputs["input_ids"]}
    glm_all_labelled = dict(glm_inputs, labels=glm_inputs["input_ids"])
    glm.train()
    gpt2.train()
    try:
        runs = {
            "glm": train_step(glm, glm_inputs),
            "glm_all_labelled": train_step(glm, glm_all_labelled),
            "gpt2": train_step(gpt2, gpt2_inputs),
        }
        times = interleaved(runs, args.repeats)
    finally:
        glm.eval()
        gpt2.eval()
    return {name: statistics.median(values) for name, values in times.items()}


# --------------------------------------------------------------------------------------------------------------
# Profiling (--profile)


def profile_decode_step(model, prompt: torch.Tensor, position_ids: torch.Tensor | None, rows: int) -> str:
    """Profiles one cached forward of a single new token after prefilling `prompt` (what one generate() step runs,
    without the generation loop around it)."""
    from torch.profiler import ProfilerActivity, profile

    extra = {}
    if position_ids is not None:
        extra["position_ids"] = position_ids[..., -1:].clone()
        extra["position_ids"][:, 1] += 1
    next_token = torch.full((prompt.shape[0], 1), FIRST_ORDINARY_ID)
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        prefill_extra = {"position_ids": position_ids} if position_ids is not None else {}
        model(prompt, **{CACHE_FIELD: cache}, use_cache=True, attention_mask=torch.ones_like(prompt), **prefill_extra)
        mask = torch.ones(prompt.shape[0], prompt.shape[1] + 1, dtype=torch.long)

        def step():
            model(next_token, **{CACHE_FIELD: cache}, use_cache=True, attention_mask=mask, **extra)
            cache.crop(-1)  # drop the step just added, so every profiled step sees the same cache length

        for _ in range(3):
            step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(20):
                step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def profile_train_step(model, inputs: dict, rows: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    model.train()
    try:
        run = train_step(model, inputs)
        run()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
    finally:
        model.eval()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def run_profiles(glm, gpt2, args, generator) -> None:
    layout = generation_layout(
        decode_prompt(glm, args, 1, generator), glm.config.blank_token_ids, glm.config.sop_token_id
    )
    print("\n=== torch.profiler: one decode step, batch 1 (x20), GLM ===")
    print(profile_decode_step(glm, layout.input_ids, layout.position_ids, args.profile_rows))
    print("=== torch.profiler: one decode step, batch 1 (x20), GPT-2 ===")
    print(profile_decode_step(gpt2, layout.input_ids, None, args.profile_rows))
    glm_inputs = train_batch(glm, args, generator)
    gpt2_inputs = {"input_ids": glm_inputs["input_ids"], "labels": glm_inputs["input_ids"]}
    print("=== torch.profiler: one train step, GLM ===")
    print(profile_train_step(glm, glm_inputs, args.profile_rows))
    print("=== torch.profiler: one train step, GPT-2 ===")
    print(profile_train_step(gpt2, gpt2_inputs, args.profile_rows))


# --------------------------------------------------------------------------------------------------------------
# Report


def goal_text(ratio: float, bound: float, higher_is_better: bool) -> str:
    met = ratio >= bound if higher_is_better else ratio <= bound
    return f"{'>=' if higher_is_better else '<='} {bound:.2f}x: {'met' if met else 'MISSED'}"


def print_table(rows: list[tuple[str, str, str, str, str]], title: str, plain: bool) -> None:
    header = ("metric", "GLM", "GPT-2", "ratio GLM/GPT-2", "goal")
    if not plain:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            plain = True
    if not plain:
        table = Table(title=title)
        for i, name in enumerate(header):
            table.add_column(name, justify="left" if i in (0, 4) else "right")
        for row in rows:
            table.add_row(*row)
        Console(width=max(120, len(title))).print(table)
        return
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells) -> str:
        return "  ".join(
            c.ljust(w) if i in (0, 4) else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(title)
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    started = time.perf_counter()
    glm, gpt2 = build_models(args)
    generator = torch.Generator().manual_seed(args.seed)

    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
        f"python {sys.version.split()[0]}"
    )
    print(
        f"sizes: vocab {args.vocab}, hidden {args.hidden}, layers {args.layers}, heads {args.heads}, "
        f"positions {args.positions}; params GLM {n_params(glm) / 1e6:.2f}M, GPT-2 {n_params(gpt2) / 1e6:.2f}M; "
        f"attention GLM {glm.config._attn_implementation}, GPT-2 {gpt2.config._attn_implementation}"
    )
    print(
        f"repeats: {args.repeats} (prefill, train), {args.decode_repeats} (decode), medians; "
        f"prompt {args.prompt_len}, new tokens {args.new_tokens}, train batch {args.train_batch} x {args.train_seq}\n"
    )

    rows = []

    def add_time(metric: str, res: dict[str, float], goal: float | None) -> None:
        ratio = res["glm"] / res["gpt2"]
        goal_cell = goal_text(ratio, goal, higher_is_better=False) if goal is not None else "-"
        rows.append((metric, f"{res['glm'] * 1e3:.1f} ms", f"{res['gpt2'] * 1e3:.1f} ms", f"{ratio:.3f}", goal_cell))

    def add_rate(metric: str, glm_value: float, gpt2_value: float, goal: float | None) -> None:
        ratio = glm_value / gpt2_value
        goal_cell = goal_text(ratio, goal, higher_is_better=True) if goal is not None else "-"
        rows.append((metric, f"{glm_value:.1f}", f"{gpt2_value:.1f}", f"{ratio:.3f}", goal_cell))

    t = time.perf_counter()
    add_time(f"prefill, batch 1, P={args.prompt_len} (time)", measure_prefill(glm, gpt2, args, generator), None)
    print(f"prefill measured in {time.perf_counter() - t:.1f}s", flush=True)
    for batch in args.decode_batches:
        t = time.perf_counter()
        res = measure_decode(glm, gpt2, args, batch, generator)
        add_rate(f"decode tok/s, batch {batch}", res["glm"]["decode_tps"], res["gpt2"]["decode_tps"], 0.95)
        add_rate(
            f"generate tok/s incl. prefill, batch {batch}",
            res["glm"]["generate_tps"],
            res["gpt2"]["generate_tps"],
            None,
        )
        print(f"decode batch {batch} measured in {time.perf_counter() - t:.1f}s", flush=True)
    t = time.perf_counter()
    train = measure_train(glm, gpt2, args, generator)
    add_time(f"train step fwd+bwd, {args.train_batch}x{args.train_seq} (time)", train, 1.05)
    add_time(
        "  same, every GLM position labelled (time)", {"glm": train["glm_all_labelled"], "gpt2": train["gpt2"]}, 1.05
    )
    print(f"train measured in {time.perf_counter() - t:.1f}s\n", flush=True)

    print_table(rows, "GLM vs GPT-2 (same size), CPU fp32, SDPA", args.plain)
    print(f"\ntotal benchmark time: {time.perf_counter() - started:.1f}s")

    if args.profile:
        run_profiles(glm, gpt2, args, generator)
    return 0


if __name__ == "__main__":
    sys.exit(main())
