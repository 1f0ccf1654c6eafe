"""Weight-only and W8A8 quantization of GLM: weight bytes, decode speed, and quality, in one process.

- Load memory: peak anonymous memory of `from_pretrained` in fp32 and quantizing while loading (Linux).
- Speed: a random-weight GLM (default 12 layers x 768 hidden, vocab 50304) in fp32 and in every quantized mode;
  bytes of the quantized linear weights relative to fp32, and greedy decode tokens/s at batch 1 and 8 (128 new
  tokens) relative to fp32.
- Quality (with `--demo-model`, a `glm-hf demo` folder): held-out perplexity of the answers of the demo's held-out
  facts (teacher-forced blank infilling) and greedy blank-fill exact match, per mode — a table shaped like
  GLM-130B's quantization table.

    python benchmarks/bench_quantization.py [--demo-model glm-demo] [--layers 12 --hidden 768]
"""

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from copy import deepcopy

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from glm_hf import GLMConfig, GLMForConditionalGeneration, corpus
from glm_hf.model.blank_infilling import batch_infilling, infilling_example
from glm_hf.model.quantization import GLMQuantizationConfig, QuantizedLinear, quantize
from glm_hf.model.tokenization_glm import GLMTokenizer
from glm_hf.training.pretraining import fill_blanks

MODES = {
    "fp32": None,
    "absmax int8": dict(bits=8),
    "absmax int4": dict(bits=4),
    "zero-point int4 (g64)": dict(bits=4, method="zeropoint", group_size=64),
    "W8A8 (dynamic int8)": dict(bits=8, activations="dynamic_int8"),
    "W8A8 + int8 output layer": dict(bits=8, activations="dynamic_int8", modules_to_not_convert=[]),
    "W4A8 (dynamic int8)": dict(bits=4, activations="dynamic_int8"),
    "W4A8 + int4 output layer": dict(bits=4, activations="dynamic_int8", modules_to_not_convert=[]),
}


def quantized_copy(model: GLMForConditionalGeneration, options: dict | None) -> GLMForConditionalGeneration:
    """A copy of `model` with a config of its own (quantizing records itself there and may untie the output layer,
    which must not reach `model`), quantized with `options` unless they are None."""
    copy = GLMForConditionalGeneration(deepcopy(model.config)).eval()
    copy.load_state_dict(model.state_dict())
    return copy if options is None else quantize(copy, GLMQuantizationConfig(**options))


def linear_weight_bytes(model: torch.nn.Module) -> int:
    total = 0
    for module in model.modules():
        if isinstance(module, QuantizedLinear):
            total += sum(t.numel() * t.element_size() for t in (module.weight, module.weight_scale))
            if module.weight_offset is not None:
                total += module.weight_offset.numel() * module.weight_offset.element_size()
        elif isinstance(module, torch.nn.Linear) and module is not getattr(model, "lm_head", None):
            # the float output layer shares the embedding matrix, so it adds no weight bytes
            total += module.weight.numel() * module.weight.element_size()
    return total


def decode_tokens_per_second(model: GLMForConditionalGeneration, batch: int, new_tokens: int) -> float:
    prompt = torch.randint(10, min(1000, model.config.vocab_size), (batch, 32))
    prompt[:, -1] = model.config.gmask_token_id
    options = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    model.generate(prompt, **{**options, "max_new_tokens": 4, "min_new_tokens": 4})
    start = time.perf_counter()
    model.generate(prompt, **options)
    return batch * new_tokens / (time.perf_counter() - start)


def speed_table(args: argparse.Namespace, base: GLMForConditionalGeneration | None = None, label: str = "") -> None:
    """Weight bytes and decode speed per mode, for `base` or a random model of `--layers` x `--hidden`."""
    if base is None:
        config = GLMConfig(
            vocab_size=50304,
            hidden_size=args.hidden,
            num_hidden_layers=args.layers,
            num_attention_heads=args.hidden // 64,
            max_position_embeddings=512,
            hidden_dropout=0.0,
            attention_dropout=0.0,
        )
        torch.manual_seed(0)
        base = GLMForConditionalGeneration(config).eval()
        label = f"{args.layers} layers x {args.hidden} hidden, vocab 50304"
    threads = torch.get_num_threads()
    print(f"\nspeed: {label}, fp32 CPU, {threads} threads")
    header = f"{'mode':<24}{'weight bytes':>14}{'vs fp32':>9}"
    print(header + f"{'tok/s b1':>10}{'vs fp32':>9}{'tok/s b8':>10}{'vs fp32':>9}")
    reference = None
    for name, options in MODES.items():
        model = quantized_copy(base, options)
        size = linear_weight_bytes(model)
        with torch.no_grad():
            speeds = [decode_tokens_per_second(model, b, args.new_tokens) for b in (1, 8)]
        reference = reference or (size, *speeds)
        print(
            f"{name:<24}{size:>14,}{size / reference[0]:>9.3f}{speeds[0]:>10.1f}{speeds[0] / reference[1]:>9.2f}"
            f"{speeds[1]:>10.1f}{speeds[1] / reference[2]:>9.2f}"
        )


def answer_perplexity(model: GLMForConditionalGeneration, tokenizer: GLMTokenizer, facts: list) -> float:
    rows = []
    for fact in facts:
        part_a = tokenizer(fact.text)["input_ids"]
        spaced = " " + fact.answer if " [MASK]" in fact.text else fact.answer
        span = tokenizer(spaced, add_special_tokens=False)["input_ids"]
        ids = (tokenizer.mask_token_ids, tokenizer.sop_token_id, tokenizer.eop_token_id)
        rows.append(infilling_example(part_a, [span], *ids))
    total, count = 0.0, 0
    for start in range(0, len(rows), 64):
        batch = batch_infilling(rows[start : start + 64], tokenizer.pad_token_id)
        labels = batch.pop("labels")
        with torch.no_grad():
            logits = model(**batch).logits
        picked = labels != -100
        total += torch.nn.functional.cross_entropy(logits[picked], labels[picked], reduction="sum").item()
        count += int(picked.sum())
    return math.exp(total / count)


def quality_table(folder: str) -> None:
    tokenizer = GLMTokenizer.from_pretrained(folder)
    base = GLMForConditionalGeneration.from_pretrained(folder).eval()
    _, held_out = corpus.split_facts()
    print(f"\nquality: {folder}, {len(held_out)} held-out facts")
    print(f"{'mode':<24}{'answer perplexity':>18}{'vs fp32':>9}{'exact match':>13}")
    reference = None
    for name, options in MODES.items():
        if options and options.get("group_size") and base.config.hidden_size % options["group_size"]:
            continue
        model = quantized_copy(base, options)
        perplexity = answer_perplexity(model, tokenizer, held_out)
        fills = fill_blanks(model, tokenizer, [fact.text for fact in held_out])
        exact = sum(f == fact.answer for f, fact in zip(fills, held_out, strict=True)) / len(held_out)
        reference = reference or perplexity
        print(f"{name:<24}{perplexity:>18.3f}{perplexity / reference:>9.3f}{exact:>13.3f}")


PEAK_MEMORY_PROBE = """
import sys, threading, time, torch
from glm_hf import GLMForConditionalGeneration, GLMQuantizationConfig
def anonymous_mb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon"):
            return int(line.split()[1]) / 1024
peak, done = [0.0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], anonymous_mb())
        time.sleep(0.005)
base = anonymous_mb()
sampler = threading.Thread(target=sample)
sampler.start()
bits = int(sys.argv[2])
options = {"quantization_config": GLMQuantizationConfig(bits=bits)} if bits else {}
model = GLMForConditionalGeneration.from_pretrained(sys.argv[1], **options)
done.set()
sampler.join()
resident = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]) / 2**20
print(f"{peak[0] - base:.0f} {resident:.0f}")
"""


def memory_table(args: argparse.Namespace) -> None:
    """Peak anonymous memory (RssAnon, sampled every 5 ms; the memory-mapped checkpoint's page cache excluded) of
    `from_pretrained` in a fresh process, fp32 vs quantizing while loading."""
    config = GLMConfig(
        vocab_size=50304,
        hidden_size=args.memory_hidden,
        num_hidden_layers=args.memory_layers,
        num_attention_heads=args.memory_hidden // 64,
        max_position_embeddings=512,
    )
    with tempfile.TemporaryDirectory() as folder:
        GLMForConditionalGeneration(config).save_pretrained(folder)
        print(f"\nload memory: {args.memory_layers} layers x {args.memory_hidden} hidden (fresh process per row)")
        print(f"{'load':<24}{'peak anonymous MB':>18}{'resident model MB':>19}")
        for name, bits in (("fp32", 0), ("absmax int8 on load", 8), ("absmax int4 on load", 4)):
            command = [sys.executable, "-c", PEAK_MEMORY_PROBE, folder, str(bits)]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            peak, resident = result.stdout.split()[-2:]
            print(f"{name:<24}{peak:>18}{resident:>19}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--demo-model", help="a glm-hf demo folder for the quality table")
    parser.add_argument("--memory-layers", type=int, default=24, help="model size for the load-memory table")
    parser.add_argument("--memory-hidden", type=int, default=1024)
    args = parser.parse_args()
    speed_table(args)
    memory_table(args)
    if args.demo_model:
        demo = GLMForConditionalGeneration.from_pretrained(args.demo_model).eval()
        speed_table(args, demo, f"the demo model {args.demo_model}")
        quality_table(args.demo_model)


if __name__ == "__main__":
    main()
