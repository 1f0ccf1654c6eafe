"""Compiled and exported GLM: decode steps read nothing on the host, compiled static-cache decoding (as generate()
does it) gives eager's tokens without recompiling, and torch.export of prefill and decode (transformers' ExecuTorch
recipes, static and dynamic cache) computes eager's logits."""

import pytest
import torch
from torch.overrides import TorchFunctionMode
from transformers import CompileConfig, DynamicCache, StaticCache
from transformers.integrations.executorch import TorchExportableModuleForDecoderOnlyLM, export_with_dynamic_cache

from glm_hf import GLMForCausalLM
from glm_hf.model.blank_infilling import build_position_ids
from glm_hf.model.transformers_compat import CACHE_FIELD, output_cache
from tests.helpers.tiny import random_words, tiny_model

# Compiled decoding and export are supported from transformers 5.24 (its static cache counts tokens in a device
# tensor and generate() takes the cache as `cache=`); 5.23's static-cache generate() recompiles per step.
pytestmark = pytest.mark.skipif(
    CACHE_FIELD != "cache", reason="compiled static-cache decoding and export need transformers >= 5.24"
)

HOST_READS = {"__bool__", "__int__", "__float__", "__index__", "item", "tolist"}
HEADS = ["seq2seq", "causal"]
ENCODINGS = ["learned_2d", "rotary_2d"]


class NoHostReads(TorchFunctionMode):
    """Fails on any tensor operation that brings a value to the host (a device sync on GPUs)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in HOST_READS:
            raise AssertionError(f"host read {func.__name__} during a decode step")
        return func(*args, **(kwargs or {}))


def build(head: str, encoding: str):
    model = tiny_model(position_encoding=encoding)
    return GLMForCausalLM(model.config).eval() if head == "causal" else model


def prompts(model, head: str) -> tuple[torch.Tensor, torch.Tensor]:
    ids = random_words(torch.Generator().manual_seed(0), 2, 6)
    if head == "seq2seq":
        ids[:, -1] = model.config.mask_token_id
    padding = torch.ones_like(ids)
    padding[1, :2] = 0
    return ids, padding


@pytest.mark.parametrize("cache_kind", ["dynamic", "static"])
@pytest.mark.parametrize("head", HEADS)
@torch.no_grad()
def test_decode_steps_read_nothing_on_the_host(head, cache_kind):
    """The forward of a decode step, given what generate() gives it, runs without one host read."""
    model = build(head, "learned_2d")
    ids, padding = prompts(model, head)
    kwargs = {"max_new_tokens": 1, "do_sample": False, "return_dict_in_generate": True}
    if cache_kind == "static":
        kwargs["cache"] = StaticCache(config=model.config, max_cache_len=16)
    output = model.generate(input_ids=ids, attention_mask=padding, **kwargs)
    cache, sequence = output_cache(output), output.sequences
    step = {"input_ids": sequence[:, -1:], "cache": cache, "use_cache": True}
    if head == "seq2seq":  # the prompt as generate() laid it out: text, then <|startofpiece|>
        prompt_padding = torch.cat([padding, torch.ones_like(padding[:, :1])], dim=1)
        step["prompt_position_ids"] = build_position_ids(
            sequence[:, :-1], model.config.blank_token_ids, model.config.sop_token_id, prompt_padding
        )
        step["attention_mask"] = torch.cat([padding, torch.ones_like(padding[:, :2])], dim=1)
    else:
        step["attention_mask"] = torch.cat([padding, torch.ones_like(padding[:, :1])], dim=1)
        step["prefix_key_values"] = model.left_to_right_prefix_key_values()
    if cache_kind == "static":
        step["attention_mask"] = model.create_masks_for_generate(
            model.config, torch.empty(2, 1, 0), step["attention_mask"], cache=cache
        )
    with NoHostReads():
        for _ in range(3):
            logits = model(**step).logits
            step["input_ids"] = logits[:, -1:].argmax(-1)
            if cache_kind == "dynamic":
                step["attention_mask"] = torch.cat([step["attention_mask"], step["attention_mask"][:, -1:]], dim=1)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("head", HEADS)
@torch.no_grad()
def test_compiled_static_cache_decoding_gives_eager_tokens_without_recompiling(head, encoding):
    model = build(head, encoding)
    ids, padding = prompts(model, head)
    settings = {"max_new_tokens": 8, "min_new_tokens": 8, "do_sample": False}
    eager = model.generate(input_ids=ids, attention_mask=padding, **settings)
    compile_config = CompileConfig(fullgraph=True, dynamic=False, mode="default")
    compile_config._compile_all_devices = True  # transformers compiles on CPU only when asked to
    torch._dynamo.reset()
    with torch._dynamo.config.patch(recompile_limit=1, fail_on_recompile_limit_hit=True):  # one graph for all steps
        compiled = model.generate(
            input_ids=ids,
            attention_mask=padding,
            cache_implementation="static",
            compile_config=compile_config,
            **settings,
        )
    assert hasattr(model, "_compiled_call")  # generate() took the compiled path
    assert torch.equal(compiled, eager)


@pytest.mark.parametrize("encoding", ENCODINGS)
@torch.no_grad()
def test_export_of_prefill_and_decode_computes_eager_logits(encoding):
    model = build("causal", encoding)
    model.generation_config.cache_implementation = "static"
    ids = random_words(torch.Generator().manual_seed(3), 1, 5)
    expected = model(input_ids=ids).logits

    prefill = TorchExportableModuleForDecoderOnlyLM(model, batch_size=1, max_cache_len=16)
    program = prefill.export(input_ids=ids, cache_position=torch.arange(5))
    torch.testing.assert_close(program.module()(input_ids=ids, cache_position=torch.arange(5)), expected)

    decode = TorchExportableModuleForDecoderOnlyLM(model, batch_size=1, max_cache_len=16)
    program = decode.export(input_ids=ids[:, :1], cache_position=torch.arange(1))
    step = program.module()
    steps = [step(input_ids=ids[:, i : i + 1], cache_position=torch.tensor([i])) for i in range(5)]
    torch.testing.assert_close(torch.cat(steps, dim=1), expected)

    dynamic = export_with_dynamic_cache(model, ids, torch.ones_like(ids))
    logits = dynamic.module()(
        input_ids=ids, attention_mask=torch.ones_like(ids), cache=DynamicCache(config=model.config), use_cache=True
    )
    torch.testing.assert_close(logits.logits, expected)
