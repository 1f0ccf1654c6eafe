"""Which CPU kernel GLM's quantized linear layers should run, and how fast W8A8 and W4A8 checkpoints decode.

1. Layers (glm-large's shapes, batch 1 and 8): each kernel's speed as a multiple of fp32 `nn.Linear`:
   - W8A8, W4A8: glm_hf's `QuantizedLinear` with `activations="dynamic_int8"` and bits 8 or 4 (int4 codes widened
     to int8), which runs torch's quantized engine (`torch.ops.quantized.linear_dynamic`, fbgemm);
   - oneDNN W8A8, W4A8: absmax per-row codes on `torch.ops.onednn.qlinear_pointwise` (the op x86 inductor lowers
     quantized linears to; plain int8 tensors, none of the quantized-tensor functions torch deprecates), with the
     activations quantized per call in eager code as the quantized engine does (per tensor, asymmetric uint8);
   - weight-only: glm_hf's dequantize-and-multiply fallback (int8, int4), `torch._weight_int8pack_mm` (per-row
     int8) and `torch._weight_int4pack_mm_for_cpu` (int4 in groups of 128);
   - torchao, when importable: `Int8DynamicActivationInt8WeightConfig` eager and under `torch.compile`
     (W8A8's possible successor) and `PrototypeInt4WeightOnlyConfig` (int4 weight-only, groups of 128).
     torchao's int8-activation int4 CPU kernel (`da8w4_linear_cpu`) has no CPU kernel in the PyPI wheel: left out.
   Weights are cold, as in decoding (a step reads each layer once): every kernel cycles through copies of its
   layer whose fp32 size adds up to `--cold-mb` (default 256 MB, beyond a 32 MB L3 cache).
2. Decode: the glm-large-sized `GLMForCausalLM` of benchmarks/bench_decode.py (hidden 1024, 24 layers, vocab
   30592, fp32, random weights), greedy tokens/s at batch 1 after a prompt of 32 ids, in fp32, W8A8 and W4A8
   (output layer in fp32, and quantized too), as multiples of fp32; the int4 goal is W4A8 >= 1.5x fp32.

Clock: with `--threads 1` (the default) the thread's CPU time (`time.thread_time`), so time the process spends
descheduled on a shared machine is not counted; with more threads, wall time. Kernels and modes alternate within
each round (reversed every other round); a layer's figure is the fastest round, a decode figure the median run.
On 2 cores a shape takes 1-2 minutes (torchao's compilation included) and the decode part about 1.5 minutes.

    python benchmarks/bench_int8_kernels.py                  # both parts; pip install torchao --no-deps for torchao
    python benchmarks/bench_int8_kernels.py --skip-decode --shapes 1024x4096 --batches 1
    python benchmarks/bench_int8_kernels.py --skip-layers --layers 24 --new-tokens 32
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import torch
import transformers
from bench_decode import build_models, cpu_name, markdown_table
from bench_vs_gpt2 import interleaved, random_ids
from transformers import LogitsProcessor, LogitsProcessorList

from glm_hf.model.quantization import (
    GLMQuantizationConfig,
    QuantizationSpec,
    QuantizedLinear,
    quantize,
    quantize_weight,
    unpack_int4,
)

Kernel = Callable[[torch.Tensor], torch.Tensor]
Cycle = Callable[[torch.Tensor], list[torch.Tensor]]
INT4_GROUP = 128  # torch's and torchao's int4 CPU kernels take groups of 32 to 256 columns
DECODE_GOAL = 1.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["1024x4096", "4096x1024", "1024x30592"], help="IN x OUT")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per layer kernel (default 5)")
    parser.add_argument("--cold-mb", type=int, default=256, help="fp32 MB of layer copies each kernel cycles through")
    parser.add_argument("--no-compile", action="store_true", help="leave out torchao under torch.compile")
    parser.add_argument("--layers", type=int, default=24, help="decode model's layers (default 24)")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens decoded per run (default 32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed decode runs per mode (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1: CPU-time clock)")
    parser.add_argument("--skip-layers", action="store_true")
    parser.add_argument("--skip-decode", action="store_true")
    return parser.parse_args(argv)


def clock(threads: int) -> Callable[[], float]:
    """The thread's CPU time when torch runs on this thread alone, else wall time."""
    return time.thread_time if threads == 1 else time.perf_counter


# --------------------------------------------------------------------------------------------------------------
# Kernels: each builds a function of x from one fp32 nn.Linear


def glm_layer(bits: int, activations: str | None) -> Callable[[torch.nn.Linear], Kernel]:
    """glm_hf's own QuantizedLinear (absmax, per row), as a checkpoint runs it."""
    spec = QuantizationSpec(bits, "absmax", None, activations)
    return lambda linear: QuantizedLinear.from_linear(linear, spec)


def onednn(bits: int) -> Callable[[torch.nn.Linear], Kernel]:
    """`onednn.qlinear_pointwise` on glm_hf's absmax per-row codes; activations quantized per tensor to uint8 with
    the quantized engine's parameters (7 bits for int8 codes, 8 for int4 codes, as QuantizedLinear does)."""
    levels = 255 if bits == 4 else 127

    def build(linear: torch.nn.Linear) -> Kernel:
        quantized = quantize_weight(linear.weight.detach(), QuantizationSpec(bits))
        codes = unpack_int4(quantized.codes) if bits == 4 else quantized.codes
        packed = torch.ops.onednn.qlinear_prepack(codes, None)
        scales, zeros = quantized.scale[:, 0].contiguous(), torch.zeros(linear.out_features, dtype=torch.long)
        bias = linear.bias.detach()

        def run(x: torch.Tensor) -> torch.Tensor:
            low, high = (value.item() for value in torch.aminmax(x))
            low, high = min(low, 0.0), max(high, 0.0)
            scale = (high - low) / levels or 1.0
            zero = round(-low / scale)
            codes_x = torch.round(x / scale + zero).clamp_(0, levels).to(torch.uint8)
            return torch.ops.onednn.qlinear_pointwise(
                codes_x, scale, zero, packed, scales, zeros, bias, 1.0, 0, torch.float32, "none", [], ""
            )

        return run

    return build


def int8pack(linear: torch.nn.Linear) -> Kernel:
    """torch's weight-only int8 kernel on per-row absmax codes."""
    quantized = quantize_weight(linear.weight.detach(), QuantizationSpec(8))
    scale, bias = quantized.scale[:, 0].contiguous(), linear.bias.detach()
    return lambda x: torch._weight_int8pack_mm(x, quantized.codes, scale) + bias


def int4pack(linear: torch.nn.Linear) -> Kernel:
    """torch's weight-only int4 CPU kernel (tinygemm layout) on absmax codes in groups of `INT4_GROUP` columns."""
    quantized = quantize_weight(linear.weight.detach(), QuantizationSpec(4, "absmax", INT4_GROUP))
    packed = torch._convert_weight_to_int4pack_for_cpu(unpack_int4(quantized.codes).to(torch.int32) + 8, 1)
    scale_zero = torch.stack([quantized.scale, torch.zeros_like(quantized.scale)], -1).transpose(0, 1).contiguous()
    bias = linear.bias.detach()
    return lambda x: torch._weight_int4pack_mm_for_cpu(x, packed, INT4_GROUP, scale_zero) + bias


def torchao_config(name: str):
    """A torchao config by name, or None when torchao (or that config) is not importable."""
    try:
        if name == "int4":
            from torchao.prototype.quantization.int4.inference_workflow import PrototypeInt4WeightOnlyConfig

            return PrototypeInt4WeightOnlyConfig(group_size=INT4_GROUP)
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig

        return Int8DynamicActivationInt8WeightConfig()
    except ImportError:
        return None


def torchao(name: str) -> Callable[[torch.nn.Linear], Kernel]:
    """torchao's config `name` applied by `quantize_` to a copy of the layer."""

    def build(linear: torch.nn.Linear) -> Kernel:
        from torchao.quantization import quantize_

        layer = copy.deepcopy(linear)
        wrapper = torch.nn.Sequential(layer).eval()
        quantize_(wrapper, torchao_config(name))
        return wrapper

    return build


def kernels(compile_torchao: bool) -> dict[str, tuple[Callable[[torch.nn.Linear], Kernel], bool]]:
    """Name -> (builder, compile the cycle over copies); fp32 first."""
    table = {
        "fp32": (lambda linear: linear, False),
        "W8A8 (engine)": (glm_layer(8, "dynamic_int8"), False),
        "W4A8 (engine)": (glm_layer(4, "dynamic_int8"), False),
        "W8A8 (oneDNN)": (onednn(8), False),
        "W4A8 (oneDNN)": (onednn(4), False),
        "int8 weight-only (glm_hf)": (glm_layer(8, None), False),
        "int4 weight-only (glm_hf)": (glm_layer(4, None), False),
        "torch._weight_int8pack_mm": (int8pack, False),
        "torch._weight_int4pack_mm_for_cpu": (int4pack, False),
    }
    if torchao_config("int8") is not None:
        table["torchao int8 dynamic, eager"] = (torchao("int8"), False)
        if compile_torchao:
            table["torchao int8 dynamic, compiled"] = (torchao("int8"), True)
    if torchao_config("int4") is not None:
        table["torchao int4 weight-only"] = (torchao("int4"), False)
    return table


# --------------------------------------------------------------------------------------------------------------
# Layers


def cycle(layers: list[Kernel], compiled: bool) -> Cycle:
    """One call runs every copy once on x (compiled into one graph when asked; the outputs are returned, or the
    compiler would leave the unused products out)."""

    def run(x: torch.Tensor) -> list[torch.Tensor]:
        return [layer(x) for layer in layers]

    return torch.compile(run, dynamic=False) if compiled else run


def layer_table(args: argparse.Namespace) -> None:
    now = clock(args.threads)
    table = kernels(not args.no_compile)
    print(f"\nlayers: speed as a multiple of fp32 nn.Linear (cold weights: {args.cold_mb} MB of fp32 copies)")
    header = ("kernel", *(f"{shape} b{batch}" for shape in args.shapes for batch in args.batches))
    columns: dict[str, list[str]] = {name: [] for name in table}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", UserWarning)
        for shape in args.shapes:
            in_features, out_features = (int(size) for size in shape.split("x"))
            copies = max(1, math.ceil(args.cold_mb * 2**20 / (4 * in_features * out_features)))
            linears = [torch.nn.Linear(in_features, out_features).eval() for _ in range(copies)]
            runs = {}
            for name, (build, compiled) in table.items():
                try:
                    runs[name] = cycle([build(linear) for linear in linears], compiled)
                except Exception as error:  # a kernel this torch or CPU lacks: reported in its cell
                    runs[name] = error
            for batch in args.batches:
                x = torch.randn(batch, in_features)
                best = fastest_rounds({n: r for n, r in runs.items() if callable(r)}, x, args.rounds, now)
                for name, run in runs.items():
                    if not callable(run):
                        columns[name].append(f"failed: {type(run).__name__}")
                    elif name == "fp32":
                        columns[name].append(f"1.00x ({best[name] / copies * 1e6:.0f} µs)")
                    else:
                        columns[name].append(f"{best['fp32'] / best[name]:.2f}x")
                print(f"  {shape} batch {batch} done", file=sys.stderr, flush=True)
    print(markdown_table(header, [(name, *cells) for name, cells in columns.items()]))


def fastest_rounds(runs: dict[str, Cycle], x: torch.Tensor, rounds: int, now: Callable[[], float]) -> dict[str, float]:
    """Each run's fastest of `rounds` timed calls after a warm-up call (which also compiles), alternating order."""
    best = dict.fromkeys(runs, math.inf)
    for run in runs.values():
        run(x)
    names = list(runs)
    for i in range(rounds):
        for name in names if i % 2 == 0 else names[::-1]:
            start = now()
            runs[name](x)
            best[name] = min(best[name], now() - start)
    return best


# --------------------------------------------------------------------------------------------------------------
# Decode


class _FirstLogitsClock(LogitsProcessor):
    """Records the clock when the first logits are processed, i.e. when prefill has finished."""

    def __init__(self, now: Callable[[], float]) -> None:
        self.now, self.first = now, None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.first is None:
            self.first = self.now()
        return scores


def decode_modes() -> dict[str, GLMQuantizationConfig | None]:
    """fp32, then W8A8 and W4A8 with the output layer in fp32 (the default) and quantized too."""
    w8a8, w4a8 = dict(bits=8, activations="dynamic_int8"), dict(bits=4, activations="dynamic_int8")
    return {
        "fp32": None,
        "W8A8": GLMQuantizationConfig(**w8a8),
        "W4A8": GLMQuantizationConfig(**w4a8),
        "W8A8, int8 output layer": GLMQuantizationConfig(**w8a8, modules_to_not_convert=[]),
        "W4A8, int4 output layer": GLMQuantizationConfig(**w4a8, modules_to_not_convert=[]),
    }


def decode_table(args: argparse.Namespace) -> None:
    now = clock(args.threads)
    glm, gpt2 = build_models(30592, 1024, args.layers, 16, 1024, seed=0)
    del gpt2
    prompt = random_ids(torch.Generator().manual_seed(0), 30592, 1, 32)
    modes = decode_modes()
    models = {name: glm if modes[name] is None else quantize(copy.deepcopy(glm), modes[name]) for name in modes}
    outputs: dict[str, torch.Tensor] = {}

    def run(name: str) -> Callable[[], float]:
        def decode() -> float:
            timer = _FirstLogitsClock(now)
            with torch.no_grad():
                outputs[name] = models[name].generate(
                    prompt,
                    attention_mask=torch.ones_like(prompt),
                    pad_token_id=glm.config.pad_token_id,
                    do_sample=False,
                    max_new_tokens=args.new_tokens,
                    min_new_tokens=args.new_tokens,
                    logits_processor=LogitsProcessorList([timer]),
                )
            return now() - timer.first

        return decode

    times = interleaved({name: run(name) for name in models}, args.repeats)
    steps = args.new_tokens - 1
    rates = {name: steps / statistics.median(values) for name, values in times.items()}
    print(
        f"\ndecode: GLMForCausalLM, hidden 1024, {args.layers} layers, vocab 30592, fp32 random weights; batch 1, "
        f"prompt 32, {args.new_tokens} new tokens, median of {args.repeats} runs after a warm-up"
    )
    rows = []
    for name, rate in rates.items():
        ratio = rate / rates["fp32"]
        same = "–" if name == "fp32" else ("yes" if torch.equal(outputs[name], outputs["fp32"]) else "no")
        goal = f"≥ {DECODE_GOAL}x: {'met' if ratio >= DECODE_GOAL else 'MISSED'}" if name.startswith("W4A8") else "–"
        spread = "–".join(f"{steps / seconds:.1f}" for seconds in (max(times[name]), min(times[name])))
        rows.append((name, f"{rate:.1f}", spread, f"{ratio:.2f}x", same, goal))
    print(markdown_table(("mode", "tok/s", "runs' range", "vs fp32", "same tokens as fp32", "int4 goal"), rows))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    clock_name = "thread CPU time" if args.threads == 1 else "wall time"
    print(
        f"torch {torch.__version__}, CPU {cpu_name()} ({torch.backends.cpu.get_cpu_capability()}), "
        f"threads {args.threads}, clock: {clock_name}, torchao: {'yes' if torchao_config('int8') else 'no'}"
    )
    if not args.skip_layers:
        layer_table(args)
    if not args.skip_decode:
        decode_table(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
