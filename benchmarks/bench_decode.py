"""Decode speed of a glm-large-sized `glm_hf.GLMForCausalLM` against a memory-bandwidth roofline and a GPT-2 of
identical size, eager and compiled, plus a training step; one table from one run in one process.

Models: `GLMForCausalLM` (learned 2D positions, pre-LN) and `GPT2LMHeadModel` with the same vocab, hidden size,
layers, heads, max positions and intermediate size (4 * hidden), the same activation (tanh-approximated GeLU),
tied input/output embeddings, dropout 0, float32, SDPA attention, eval mode, random init from the same seed.
Defaults are glm-large's sizes: hidden 1024, 24 layers, 16 heads, vocab 30592, 1024 positions.

Measured (medians over `--repeats` timed runs after one untimed warm-up run of every configuration; the
configurations alternate within each round, in reversed order every other round, to cancel slow drift):

1. decode tokens/s at batch 1 and 8: greedy `generate()` of exactly `--new-tokens` N tokens per row
   (`min_new_tokens = max_new_tokens = N`) after a prompt of `--prompt` P random ordinary ids (all rows the same
   length, no padding; GPT-2 gets the same ids). Four configurations:
   - GLM eager and GPT-2 eager: the default dynamic cache;
   - GLM compiled and GPT-2 compiled: `generate(..., cache_implementation="static", compile_config=...)`. This is
     transformers' own automatic compilation (`GenerationMixin._valid_auto_compile_criteria` and
     `PreTrainedModel.get_compiled_call` in transformers 5.24): with a compileable, non-dynamic cache (the static
     one), `generate()` wraps the model's `__call__` in `torch.compile(**compile_config.to_dict())`, stores it as
     `model._compiled_call` and runs every decode step through it (prefill stays eager). transformers does this by
     itself only on CUDA/XPU/TPU/Neuron; on other devices `_valid_auto_compile_criteria` requires
     `compile_config._compile_all_devices = True`, so this script passes transformers' default `CompileConfig()`
     (inductor, mode "reduce-overhead", fullgraph False, dynamic None) with that flag set: on CUDA the same call
     compiles without the flag. (`_can_compile_fullgraph` is not read by `generate()` in 5.24; transformers'
     tests use it to decide whether to test compilation.) The script verifies that the compiled path was taken:
     `model._compiled_call` exists after the call and TorchDynamo compiled graphs during the warm-up; it reports
     graphs compiled during the timed runs (recompiles; 0 expected) and graph breaks.
   Timing is per step, not by subtracting a prefill-only run: a logits processor timestamps the first generated
   token's logits (prefill has then finished), and decode tokens/s = (N - 1) * batch / (end of `generate()` - that
   timestamp), i.e. the N - 1 cached forwards that follow the prefill, with their sampling. One run gives both
   ends, so no second prefill measurement (with its own noise) is subtracted.
   Eager and compiled greedy tokens are compared ("identical tokens": every row, every position, both batches).
2. memory-bandwidth roofline: one pass = fp32 matrix-vector products (x of batch 1) over every matrix one decode
   step reads, with `F.linear(x, W)` (MKL, what `nn.Linear` runs) and with oneDNN on the weights packed as
   `glm_hf.pack_for_cpu` packs them, in the layouts oneDNN picks for 1 row and for 8 rows (pack_for_cpu's default);
   the fastest kernel gives the roofline (a plain read of the same bytes, `Tensor.sum`, is printed for reference).
   The matrices: per layer query_key_value (3h x h), dense (h x h), dense_h_to_4h (4h x h), dense_4h_to_h (h x 4h),
   and the output layer onto the vocabulary (vocab x h); the GLM model's own weight tensors. Each kernel's pass is
   timed `--roofline-passes` times after one warm-up pass; achieved GB/s = bytes of those matrices / the fastest
   pass (best of N: the strictest roofline a run can show, since any pass slower than the best lost time to
   something other than reading weights). The median pass is printed beside it, with packed GLM's batch-1 fraction
   of it: decode tokens/s are medians, and on a shared virtual machine single passes of the same sweep vary by 2x.
   Roofline tokens/s at batch 1 = GB/s / weight bytes (the bytes read per step; biases, LayerNorms, embedding rows
   and the KV cache are left out, well under 1% at the defaults). At batch 8 the roofline is 8x the batch-1 figure:
   the weights are read once per step for the whole batch (the batch's extra compute and KV-cache reads are
   ignored). GPT-2 reads the same matrices (transposed, as Conv1D), so it has the same roofline.
3. train step: `loss.backward()` and `torch.optim.AdamW.step()` (grads set to None after each step), `model.train()`,
   batch `--train-batch` x `--train-seq` random ids with every position labelled (labels = input_ids; both models
   shift inside), as bench_vs_gpt2.py measures "every GLM position labelled". The train models are built
   separately at `--train-hidden` / `--train-layers` / `--train-heads` (defaults 512 / 8 / 8; vocab `--vocab`,
   the same sizes for both models), because a glm-large-sized step would take an estimated 20 s on 2 cores.

Goals (reported, never asserted; issue 28): GLM decode at batch 1 >= 0.90 of the roofline and >= 1.0x GPT-2's
tokens/s, both eager and compiled, and at batch 8 >= 0.60 of 8x the roofline; train step time GLM / GPT-2 <= 1.0. A
configuration that fails shows "failed: <error>" in its cell (the full message follows the table) and the run goes
on.

Every configuration runs with the weights as built and packed by `glm_hf.pack_for_cpu` (`--layouts`; GLM / GPT-2
compares the same layout). Run (CPU; defaults: P 32, N 64, 3 repeats; about 20 minutes on 2 cores with both
layouts, half of it inductor compilation of the four compiled configurations at both batch sizes):

    python benchmarks/bench_decode.py
    python benchmarks/bench_decode.py --skip-compile --skip-train                     # eager decode only
    python benchmarks/bench_decode.py --hidden 64 --layers 2 --heads 4 --vocab 1000 --new-tokens 8 --repeats 1 \\
        --threads 1 --train-hidden 64 --train-layers 2 --train-heads 4 --train-seq 32   # a smoke test

`--threads N` calls `torch.set_num_threads(N)`; by default torch's own thread count is left as is.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import torch.nn.functional as F
import transformers
from bench_vs_gpt2 import _FirstTokenClock, interleaved, n_params, random_ids
from torch._dynamo.utils import counters as dynamo_counters
from transformers import CompileConfig, GPT2Config, GPT2LMHeadModel, LogitsProcessorList
from transformers.pytorch_utils import Conv1D

from glm_hf import GLMConfig, GLMForCausalLM
from glm_hf.cpu_packing import DEFAULT_BATCH_SIZE, PackedLinear, pack_for_cpu

DECODE_BATCHES = (1, 8)
LAYOUTS = ("plain", "packed")  # weights as the models are built; reordered by glm_hf.pack_for_cpu
ROOFLINE_PACKINGS = (1, DEFAULT_BATCH_SIZE)  # rows oneDNN's weight layouts are tuned for in the roofline sweeps
GOAL_ROOFLINE_FRACTION = 0.90
GOAL_BATCH8_ROOFLINE_FRACTION = 0.60
GOAL_DECODE_RATIO = 1.0
GOAL_TRAIN_RATIO = 1.0
CELL_ERROR_CHARS = 60


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=1024, help="hidden size (default 1024)")
    parser.add_argument("--layers", type=int, default=24, help="number of layers (default 24)")
    parser.add_argument("--heads", type=int, default=16, help="attention heads (default 16)")
    parser.add_argument(
        "--vocab", type=int, default=30592, help="vocab_size, also of the train models (default 30592)"
    )
    parser.add_argument("--positions", type=int, default=1024, help="max position embeddings (default 1024)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per row, N (default 64)")
    parser.add_argument("--prompt", type=int, default=32, help="prompt length P (default 32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (default 3)")
    parser.add_argument("--roofline-passes", type=int, default=10, help="timed matrix-vector passes (default 10)")
    parser.add_argument("--train-hidden", type=int, default=512, help="train models' hidden size (default 512)")
    parser.add_argument("--train-layers", type=int, default=8, help="train models' layers (default 8)")
    parser.add_argument("--train-heads", type=int, default=8, help="train models' heads (default 8)")
    parser.add_argument("--train-batch", type=int, default=4, help="train batch size (default 4)")
    parser.add_argument("--train-seq", type=int, default=256, help="train sequence length (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="torch.manual_seed for weights and data (default 0)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    parser.add_argument("--skip-compile", action="store_true", help="leave out the compiled configurations")
    parser.add_argument("--skip-train", action="store_true", help="leave out the train step")
    parser.add_argument(
        "--layouts",
        nargs="+",
        choices=LAYOUTS,
        default=list(LAYOUTS),
        help="weight layouts to decode with: plain (as built) and packed (glm_hf.pack_for_cpu); default both",
    )
    parser.add_argument(
        "--batch-hint",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"rows per step pack_for_cpu tunes the packed weights for (default {DEFAULT_BATCH_SIZE}, its own)",
    )
    args = parser.parse_args(argv)
    if args.prompt < 1 or args.new_tokens < 2 or args.repeats < 1 or args.roofline_passes < 1:
        parser.error("--prompt, --repeats and --roofline-passes must be >= 1, --new-tokens >= 2.")
    # GLMForCausalLM's text starts after its two prefix tokens ([gMASK] <|startofpiece|>) in the position table.
    if args.prompt + args.new_tokens + 2 > args.positions:
        parser.error("--prompt + --new-tokens + 2 must not exceed --positions.")
    if args.train_seq + 2 > args.positions:
        parser.error("--train-seq + 2 must not exceed --positions.")
    return args


# --------------------------------------------------------------------------------------------------------------
# Models


def build_models(
    vocab: int, hidden: int, layers: int, heads: int, positions: int, seed: int
) -> tuple[GLMForCausalLM, GPT2LMHeadModel]:
    """GLM and GPT-2 of identical sizes, fp32, dropout 0, SDPA attention, eval mode."""
    glm_config = GLMConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=positions,
        position_encoding="learned_2d",
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    gpt2_config = GPT2Config(
        vocab_size=vocab,
        n_embd=hidden,
        n_layer=layers,
        n_head=heads,
        n_inner=4 * hidden,
        n_positions=positions,
        activation_function=glm_config.hidden_act,  # GPT-2's default "gelu_new" is the same function, computed slower
        layer_norm_epsilon=glm_config.layer_norm_eps,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=glm_config.eos_token_id,
        eos_token_id=glm_config.eos_token_id,
        pad_token_id=glm_config.pad_token_id,
    )
    torch.manual_seed(seed)
    glm = GLMForCausalLM(glm_config).float().eval()
    torch.manual_seed(seed)
    gpt2 = GPT2LMHeadModel(gpt2_config).float().eval()
    for model in (glm, gpt2):
        model.set_attn_implementation("sdpa")
    return glm, gpt2


def step_matrices(model: torch.nn.Module) -> list[torch.Tensor]:
    """The weight matrices one decode step reads: those of every Linear (GLM) or Conv1D (GPT-2) module, the output
    layer onto the vocabulary included (tied to the word embeddings, it is read in full at every step)."""
    return [m.weight for m in model.modules() if isinstance(m, (torch.nn.Linear, Conv1D))]


def n_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes the tensors' elements occupy."""
    return sum(t.numel() * t.element_size() for t in tensors)


# --------------------------------------------------------------------------------------------------------------
# Roofline


@dataclass(frozen=True)
class Bandwidth:
    """GB/s of a pass over the weights: the fastest pass (the strict roofline) and the median pass (the statistic
    decode tokens/s use, on a machine whose speed drifts from pass to pass)."""

    best: float
    median: float


def _pass_gbps(matrices: list[torch.Tensor], read: Callable[[int, torch.Tensor], None], passes: int) -> Bandwidth:
    """GB/s of `passes` timed passes of `read(i, matrices[i])` over every matrix, after one warm-up pass."""

    def one_pass() -> float:
        start = time.perf_counter()
        for i, w in enumerate(matrices):
            read(i, w)
        return time.perf_counter() - start

    with torch.no_grad():
        one_pass()
        seconds = [one_pass() for _ in range(passes)]
    return Bandwidth(n_bytes(matrices) / min(seconds) / 1e9, n_bytes(matrices) / statistics.median(seconds) / 1e9)


def kernel_passes(matrices: list[torch.Tensor]) -> dict[str, Callable[[int, torch.Tensor], None]]:
    """Matrix-vector products (x of batch 1) over `matrices` by CPU kernel torch offers for them, as
    `read(i, matrices[i])` callables: `F.linear` (MKL's GEMM, what `nn.Linear` runs) and oneDNN's linear on weights
    reordered for 1 row and for 8 rows (`glm_hf.pack_for_cpu`'s default)."""
    inputs = {w.shape[1]: torch.randn(1, w.shape[1], dtype=w.dtype) for w in matrices}
    reads = {"F.linear": lambda i, w: F.linear(inputs[w.shape[1]], w)}
    for rows in ROOFLINE_PACKINGS:
        packed = [PackedLinear(w, None, batch_size=rows) for w in matrices]
        reads[f"oneDNN packed for {rows} row(s)"] = lambda i, w, packed=packed: packed[i](inputs[w.shape[1]])
    return reads


def matrix_vector_gbps(matrices: list[torch.Tensor], passes: int) -> dict[str, Bandwidth]:
    """Achieved memory bandwidth of each of `kernel_passes`' kernels over `matrices`."""
    return {name: _pass_gbps(matrices, read, passes) for name, read in kernel_passes(matrices).items()}


class InterleavedRoofline:
    """Passes of one roofline kernel taken between decode runs (`measure_decode`'s `extra_runs`), so that the
    roofline and the decode rates they are compared with see the same state of a machine whose speed drifts."""

    def __init__(self, matrices: list[torch.Tensor], kernel: str, passes_per_round: int = 3):
        self.matrices, self.read = matrices, kernel_passes(matrices)[kernel]
        self.passes_per_round = passes_per_round
        self.seconds: list[float] = []

    def __call__(self) -> float:
        with torch.no_grad():
            for _ in range(self.passes_per_round):
                start = time.perf_counter()
                for i, w in enumerate(self.matrices):
                    self.read(i, w)
                self.seconds.append(time.perf_counter() - start)
        return sum(self.seconds[-self.passes_per_round :])

    def bandwidth(self) -> Bandwidth:
        """GB/s of the fastest and of the median pass taken so far (the warm-up round's included)."""
        size = n_bytes(self.matrices)
        return Bandwidth(size / min(self.seconds) / 1e9, size / statistics.median(self.seconds) / 1e9)


def fastest_kernel(kernels: dict[str, Bandwidth]) -> tuple[str, Bandwidth]:
    """The kernel with the fastest pass, and its bandwidth: the roofline."""
    return max(kernels.items(), key=lambda item: item[1].best)


def streaming_read_gbps(matrices: list[torch.Tensor], passes: int) -> Bandwidth:
    """GB/s of `Tensor.sum()` over `matrices`: reading the same bytes with no product, for reference."""
    return _pass_gbps(matrices, lambda i, w: w.sum(), passes)


# --------------------------------------------------------------------------------------------------------------
# Decode


@dataclass
class Decoder:
    """One decode configuration: a model and the generate() arguments that select its cache and compilation."""

    label: str
    model: torch.nn.Module
    generate_kwargs: dict = field(default_factory=dict)

    @property
    def compiled(self) -> bool:
        """Whether generate() is asked to compile (a `compile_config` is passed)."""
        return "compile_config" in self.generate_kwargs


@dataclass
class DecodeRecord:
    """What the runs of one configuration at one batch size recorded; the first run is the warm-up."""

    decode_seconds: list[float] = field(default_factory=list)
    wall_seconds: list[float] = field(default_factory=list)
    new_graphs: list[int] = field(default_factory=list)  # TorchDynamo graphs compiled during each run
    graph_breaks: int = 0
    compiled_call: bool = False  # model._compiled_call existed after the run
    sequences: torch.Tensor | None = None  # the last run's output
    error: str | None = None

    def tokens_per_second(self, steps: int, batch: int) -> float:
        """Decode tokens/s of `steps` cached steps of `batch` rows, from the median timed run."""
        return steps * batch / statistics.median(self.decode_seconds[1:])


def label(model_name: str, layout: str, mode: str) -> str:
    """A configuration's label, e.g. "GLM packed compiled"."""
    return f"{model_name} {layout} {mode}"


def decode_configurations(models: dict[tuple[str, str], torch.nn.Module], skip_compile: bool) -> list[Decoder]:
    """Eager and (without `--skip-compile`) compiled configurations of every (model name, layout) in `models`. The
    compiled ones use transformers' default `CompileConfig()`, flagged to compile on every device (see the module
    docstring)."""
    decoders = []
    for (model_name, layout), model in models.items():
        decoders.append(Decoder(label(model_name, layout, "eager"), model))
        if not skip_compile:
            compile_config = CompileConfig()
            compile_config._compile_all_devices = True  # transformers auto-compiles on CPU only when asked to
            decoders.append(
                Decoder(
                    label(model_name, layout, "compiled"),
                    model,
                    {"cache_implementation": "static", "compile_config": compile_config},
                )
            )
    return decoders


def dynamo_totals() -> tuple[int, int]:
    """Graphs TorchDynamo has compiled and graph breaks it has met so far in this process."""
    return dynamo_counters["stats"]["unique_graphs"], sum(dynamo_counters["graph_break"].values())


def one_line(error: BaseException) -> str:
    """The error's type and the first line of its message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def decode_run(decoder: Decoder, prompt: torch.Tensor, new_tokens: int, record: DecodeRecord) -> Callable[[], float]:
    """A run of greedy generate() of exactly `new_tokens` tokens that records into `record` and returns the decode
    time (seconds after the first generated token's logits). After a failure it records the error and every later
    call returns 0.0 without running."""

    def run() -> float:
        if record.error is not None:
            return 0.0
        clock = _FirstTokenClock()
        graphs, breaks = dynamo_totals()
        start = time.perf_counter()
        try:
            sequences = decoder.model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                do_sample=False,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=decoder.model.config.pad_token_id,
                logits_processor=LogitsProcessorList([clock]),
                **decoder.generate_kwargs,
            )
            end = time.perf_counter()
            if sequences.shape != (prompt.shape[0], prompt.shape[1] + new_tokens):
                raise RuntimeError(f"generate() returned shape {list(sequences.shape)}")
        except Exception as error:  # reported in the table; the other configurations go on
            record.error = one_line(error)
            return 0.0
        new_graphs, new_breaks = (now - before for now, before in zip(dynamo_totals(), (graphs, breaks), strict=True))
        record.decode_seconds.append(end - clock.first)
        record.wall_seconds.append(end - start)
        record.new_graphs.append(new_graphs)
        record.graph_breaks += new_breaks
        record.compiled_call = hasattr(decoder.model, "_compiled_call")
        record.sequences = sequences
        return end - clock.first

    return run


def measure_decode(
    decoders: list[Decoder],
    prompt: torch.Tensor,
    new_tokens: int,
    repeats: int,
    extra_runs: dict[str, Callable[[], float]] | None = None,
) -> dict[str, DecodeRecord]:
    """Runs every configuration on `prompt` (one warm-up, then `repeats` interleaved rounds), and `extra_runs`
    (e.g. an `InterleavedRoofline`) in the same rounds; records by label."""
    records = {d.label: DecodeRecord() for d in decoders}
    runs = {d.label: decode_run(d, prompt, new_tokens, records[d.label]) for d in decoders}
    interleaved(runs | (extra_runs or {}), repeats)
    return records


def compile_report(decoder: Decoder, by_batch: dict[int, DecodeRecord]) -> str:
    """Whether generate() took the compiled path, from what the runs recorded."""
    if any(r.error for r in by_batch.values()):
        return f"{decoder.label}: not verified (a run failed)"
    warmup = ", ".join(f"b={b} {r.new_graphs[0]}" for b, r in by_batch.items())
    timed = sum(sum(r.new_graphs[1:]) for r in by_batch.values())
    breaks = sum(r.graph_breaks for r in by_batch.values())
    called = all(r.compiled_call for r in by_batch.values())
    taken = called and by_batch[DECODE_BATCHES[0]].new_graphs[0] > 0
    warmup_s = ", ".join(f"b={b} {r.wall_seconds[0]:.1f} s" for b, r in by_batch.items())
    return (
        f"{decoder.label}: compiled path {'taken' if taken else 'NOT taken'} (model._compiled_call "
        f"{'created' if called else 'missing'}; Dynamo graphs compiled in the "
        f"warm-up: {warmup}; during timed runs: {timed}; graph breaks: {breaks}; warm-up generate() incl. "
        f"compilation: {warmup_s})"
    )


def identical_tokens(a: dict[int, DecodeRecord], b: dict[int, DecodeRecord], prompt_len: int) -> str:
    """Whether two configurations' greedy outputs (their last runs) are equal at every batch size: "yes" or "no",
    then the details per batch."""
    parts = []
    for batch in DECODE_BATCHES:
        x, y = a[batch].sequences, b[batch].sequences
        if x is None or y is None:
            parts.append(f"b={batch} not checked (a run failed)")
            continue
        columns = (x != y).any(dim=0).nonzero().flatten().tolist()
        parts.append(
            f"b={batch} " + (f"no, first difference at new token {columns[0] - prompt_len}" if columns else "yes")
        )
    verdict = "yes" if all(p.endswith(" yes") for p in parts) else "no"
    return f"{verdict} ({'; '.join(parts)})"


# --------------------------------------------------------------------------------------------------------------
# Train


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ids: torch.Tensor) -> Callable[[], None]:
    """A run of one forward + backward + optimizer step on `ids`, every position labelled."""

    def run() -> None:
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return run


def measure_train(args: argparse.Namespace) -> dict[str, float]:
    """Median seconds of a forward + backward + AdamW step of each train model on the same batch."""
    glm, gpt2 = build_models(
        args.vocab, args.train_hidden, args.train_layers, args.train_heads, args.positions, args.seed
    )
    ids = random_ids(torch.Generator().manual_seed(args.seed), args.vocab, args.train_batch, args.train_seq)
    runs = {}
    for name, model in (("glm", glm), ("gpt2", gpt2)):
        model.train()
        runs[name] = train_step(model, torch.optim.AdamW(model.parameters(), lr=1e-5), ids)
    times = interleaved(runs, args.repeats)
    return {name: statistics.median(values) for name, values in times.items()}


# --------------------------------------------------------------------------------------------------------------
# Report


def goal(value: float, bound: float, at_least: bool, unit: str = "") -> str:
    """A goal cell, e.g. "≥ 0.60 of roofline: met"."""
    met = value >= bound if at_least else value <= bound
    return f"{'≥' if at_least else '≤'} {bound:.2f}{unit}: {'met' if met else 'MISSED'}"


def markdown_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """A markdown table; "|" inside cells is escaped."""
    lines = [header, tuple("---" for _ in header), *rows]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |" for cells in lines)


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def decode_rows(
    decoders: list[Decoder], records: dict[int, dict[str, DecodeRecord]], rooflines: dict[str, float], steps: int
) -> list[tuple[str, ...]]:
    """One row per batch size, weight layout and mode: GLM and GPT-2 tok/s (same layout and mode), their fractions
    of their batch-1 roofline (`rooflines`, tok/s by model name) times the batch, the ratio and the goals."""
    labels = {d.label for d in decoders}
    rows = []
    for batch in DECODE_BATCHES:
        for layout in LAYOUTS:
            for mode, title in (("eager", "eager, dynamic cache"), ("compiled", "compiled, static cache")):
                metric = f"decode tok/s, batch {batch}, {layout} weights, {title}"
                if label("GLM", layout, mode) not in labels:
                    continue
                cells, rates = [], []
                for model_name in ("GLM", "GPT-2"):
                    record = records[batch][label(model_name, layout, mode)]
                    if record.error:
                        cells += [f"failed: {record.error[:CELL_ERROR_CHARS]}", "–"]
                        rates.append(None)
                        continue
                    rate = record.tokens_per_second(steps, batch)
                    cells += [f"{rate:.1f}", f"{rate / (batch * rooflines[model_name]):.2f}"]
                    rates.append(rate)
                glm_rate, gpt2_rate = rates
                ratio = glm_rate / gpt2_rate if glm_rate is not None and gpt2_rate is not None else None
                goals = "–"
                if batch == 1 and glm_rate is not None:
                    fraction = glm_rate / rooflines["GLM"]
                    goals = goal(fraction, GOAL_ROOFLINE_FRACTION, at_least=True, unit=" of roofline")
                    if ratio is not None:
                        goals += "; " + goal(ratio, GOAL_DECODE_RATIO, at_least=True, unit="× GPT-2")
                elif glm_rate is not None:
                    fraction = glm_rate / (batch * rooflines["GLM"])
                    goals = goal(fraction, GOAL_BATCH8_ROOFLINE_FRACTION, at_least=True, unit=f" of {batch}× roofline")
                rows.append((metric, *cells, f"{ratio:.3f}" if ratio is not None else "–", goals))
    return rows


def decode_models(
    glm: GLMForCausalLM, gpt2: GPT2LMHeadModel, args: argparse.Namespace
) -> dict[tuple[str, str], torch.nn.Module]:
    """GLM and GPT-2 by (name, layout): as built, and copies packed by `pack_for_cpu` for `--batch-hint` rows."""
    models = {}
    for model_name, model in (("GLM", glm), ("GPT-2", gpt2)):
        for layout in args.layouts:
            models[model_name, layout] = (
                pack_for_cpu(copy.deepcopy(model), batch_size=args.batch_hint) if layout == "packed" else model
            )
    return models


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    started = time.perf_counter()
    glm, gpt2 = build_models(args.vocab, args.hidden, args.layers, args.heads, args.positions, args.seed)
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
        f"python {sys.version.split()[0]}, CPU {cpu_name()} ({os.cpu_count()} logical cores)"
    )
    print(
        f"decode models: vocab {args.vocab}, hidden {args.hidden}, layers {args.layers}, heads {args.heads}, "
        f"positions {args.positions}; params GLM {n_params(glm) / 1e6:.1f}M, GPT-2 {n_params(gpt2) / 1e6:.1f}M; "
        f"prompt {args.prompt}, new tokens {args.new_tokens}, repeats {args.repeats} (medians after one warm-up); "
        f"weight layouts: {', '.join(args.layouts)}",
        flush=True,
    )

    t = time.perf_counter()
    matrices = step_matrices(glm)
    weight_bytes, gpt2_bytes = n_bytes(matrices), n_bytes(step_matrices(gpt2))
    kernels = matrix_vector_gbps(matrices, args.roofline_passes)
    kernel, bandwidth = fastest_kernel(kernels)
    gbps = bandwidth.best
    read = streaming_read_gbps(matrices, args.roofline_passes)
    rooflines = {"GLM": gbps * 1e9 / weight_bytes, "GPT-2": gbps * 1e9 / gpt2_bytes}  # tok/s at batch 1
    print(f"roofline measured in {time.perf_counter() - t:.1f}s", flush=True)

    models = decode_models(glm, gpt2, args)
    decoders = decode_configurations(models, args.skip_compile)
    generator = torch.Generator().manual_seed(args.seed)
    records: dict[int, dict[str, DecodeRecord]] = {}
    during: dict[int, InterleavedRoofline] = {}  # roofline passes taken between each batch size's decode runs
    for batch in DECODE_BATCHES:
        t = time.perf_counter()
        prompt = random_ids(generator, args.vocab, batch, args.prompt)
        during[batch] = InterleavedRoofline(matrices, kernel)
        records[batch] = measure_decode(decoders, prompt, args.new_tokens, args.repeats, {"roofline": during[batch]})
        print(f"decode batch {batch} measured in {time.perf_counter() - t:.1f}s", flush=True)

    rows = decode_rows(decoders, records, rooflines, args.new_tokens - 1)
    rows.append(
        (f"roofline tok/s, batch 1 ({gbps:.1f} GB/s, {kernel})", f"{rooflines['GLM']:.1f}", "1.00")
        + (f"{rooflines['GPT-2']:.1f}", "1.00", "–", "–")
    )
    train_size = f"{args.train_batch}×{args.train_seq}, hidden {args.train_hidden}, {args.train_layers} layers"
    train_metric = f"train step fwd+bwd+AdamW, every position labelled, {train_size}"
    if args.skip_train:
        rows.append((train_metric, "skipped", "–", "skipped", "–", "–", "–"))
    else:
        t = time.perf_counter()
        train = measure_train(args)
        ratio = train["glm"] / train["gpt2"]
        rows.append(
            (train_metric, f"{train['glm'] * 1e3:.1f} ms", "–", f"{train['gpt2'] * 1e3:.1f} ms", "–")
            + (f"{ratio:.3f}", goal(ratio, GOAL_TRAIN_RATIO, at_least=False))
        )
        print(f"train measured in {time.perf_counter() - t:.1f}s", flush=True)

    header = ("metric", "GLM", "GLM / roofline", "GPT-2", "GPT-2 / roofline", "GLM / GPT-2", "goal")
    print("\n" + markdown_table(header, rows) + "\n")
    steps = args.new_tokens - 1
    print(
        f"- decode tok/s = (N - 1) × batch / time from the first generated token's logits to the end of generate() "
        f"(the {steps} cached steps after prefill), median of {args.repeats}. GLM / GPT-2 compares the same "
        f"weight layout and mode; packed weights: glm_hf.pack_for_cpu(model, batch_size={args.batch_hint})."
    )
    kernel_figures = ", ".join(f"{name} {b.best:.1f} (median {b.median:.1f}) GB/s" for name, b in kernels.items())
    print(
        f"- roofline: matrix-vector products (x of batch 1) over the {len(matrices)} matrices one decode step reads "
        f"({weight_bytes / 1e6:.1f} MB fp32; GPT-2's: {gpt2_bytes / 1e6:.1f} MB), best of {args.roofline_passes} "
        f"passes per kernel, the fastest kernel: {kernel_figures}; so {gbps:.1f} GB/s = {rooflines['GLM']:.1f} "
        f"tok/s at batch 1. Batch 8's roofline is 8× batch 1's ({8 * rooflines['GLM']:.1f} tok/s): the weights are "
        f"read once per step for the whole batch. Reading the same bytes without a product (Tensor.sum): "
        f"{read.best:.1f} (median {read.median:.1f}) GB/s."
    )
    for batch in DECODE_BATCHES:
        median = during[batch].bandwidth().median
        roofline = batch * median * 1e9 / weight_bytes
        fractions = [
            f"{mode} {r.tokens_per_second(steps, batch) / roofline:.2f}"
            for mode in ("eager", "compiled")
            if (r := records[batch].get(label("GLM", "packed", mode))) is not None and not r.error
        ]
        if fractions:
            print(
                f"- batch {batch}, against the median pass of {kernel} taken between its decode runs ({median:.1f} "
                f"GB/s = {roofline:.1f} tok/s; decode tok/s are medians too), packed GLM reaches: "
                f"{', '.join(fractions)}."
            )
    by_label = {d.label: {b: records[b][d.label] for b in DECODE_BATCHES} for d in decoders}
    for decoder in decoders:
        if decoder.compiled:
            print(f"- {compile_report(decoder, by_label[decoder.label])}")
    for model_name, layout in models:
        pairs = [(label(model_name, layout, "eager"), label(model_name, layout, "compiled"))]
        if layout != "plain" and (model_name, "plain") in models:
            pairs.append((label(model_name, "plain", "eager"), label(model_name, layout, "eager")))
        for a, b in pairs:
            if a in by_label and b in by_label:
                print(f"- {a} vs {b}, identical tokens: {identical_tokens(by_label[a], by_label[b], args.prompt)}")
    for name, by_batch in by_label.items():
        for batch, record in by_batch.items():
            if record.error:
                print(f"- {name}, batch {batch} failed: {record.error}")
    print(f"\ntotal benchmark time: {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
