"""glm_hf.pack_for_cpu: packed linear layers compute the unpacked model's logits and tokens (eager and compiled, every
head, GPT-2's Conv1D too), keep a plain state dict (save_pretrained / load_state_dict round trips), and refuse what
they cannot do (training, other dtypes and devices) with a message that says so."""

import copy

import pytest
import torch
from transformers import CompileConfig, GPT2Config, GPT2LMHeadModel

from glm_hf import GLMForCausalLM, GLMForConditionalGeneration, GLMQuantizationConfig, pack_for_cpu, quantize
from glm_hf.cpu_packing import PackedLinear
from glm_hf.model.transformers_compat import CACHE_FIELD
from tests.helpers.tiny import MASK, random_words, tiny_config

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


def glm(head: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    model_class = GLMForCausalLM if head == "causal" else GLMForConditionalGeneration
    return model_class(tiny_config(**overrides)).eval()


def gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=60, n_embd=32, n_layer=2, n_head=4, n_positions=64, pad_token_id=0)
    return GPT2LMHeadModel(config).eval()


def prompt(head: str) -> tuple[torch.Tensor, torch.Tensor]:
    ids = random_words(torch.Generator().manual_seed(1), 2, 7)
    if head == "seq2seq":
        ids[:, -1] = MASK
    padding = torch.ones_like(ids)
    padding[1, :2] = 0
    return ids, padding


def packed_layers(model: torch.nn.Module) -> int:
    return sum(isinstance(module, PackedLinear) for module in model.modules())


@pytest.mark.parametrize("head", ["seq2seq", "causal"])
@pytest.mark.parametrize(
    "overrides", [{}, {"position_encoding": "rotary_2d", "use_glu": True, "layernorm_style": "deepnorm"}], ids=str
)
@torch.no_grad()
def test_packed_glm_computes_the_same_logits_and_tokens(head, overrides):
    model = glm(head, **overrides)
    reference = copy.deepcopy(model)
    ids, padding = prompt(head)

    assert pack_for_cpu(model) is model
    assert packed_layers(model) == 4 * 2 + 1  # four per layer and the output layer
    assert not any(isinstance(module, torch.nn.Linear) for module in model.modules())
    torch.testing.assert_close(
        model(input_ids=ids, attention_mask=padding).logits,
        reference(input_ids=ids, attention_mask=padding).logits,
        rtol=1e-5,
        atol=1e-5,
    )
    kwargs = {"attention_mask": padding, "max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    assert torch.equal(model.generate(ids, **kwargs), reference.generate(ids, **kwargs))


@torch.no_grad()
def test_packed_gpt2_conv1d_computes_the_same_logits():
    model, reference = gpt2(), gpt2()
    ids = random_words(torch.Generator().manual_seed(2), 2, 9)
    pack_for_cpu(model)
    assert packed_layers(model) == 4 * 2 + 1
    torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_any_row_count_gives_the_result_of_the_batch_size_packed_for():
    linear = torch.nn.Linear(32, 48)
    for batch_size in (1, 8):
        packed = PackedLinear.from_module(linear, batch_size=batch_size)
        for rows in (1, 3, 8, 17):
            x = torch.randn(rows, 5, 32)
            torch.testing.assert_close(packed(x), linear(x), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(CACHE_FIELD != "cache", reason="compiled static-cache decoding needs transformers >= 5.24")
@pytest.mark.parametrize("model_name", ["glm", "gpt2"])
@torch.no_grad()
def test_compiled_packed_decoding_gives_eager_tokens(model_name):
    """transformers' own compiled generate() (static cache) runs the packed layers through one graph."""
    model = pack_for_cpu(glm("causal") if model_name == "glm" else gpt2())
    ids = random_words(torch.Generator().manual_seed(3), 2, 6)
    kwargs = {"max_new_tokens": 8, "min_new_tokens": 8, "do_sample": False, "pad_token_id": 0}
    eager = model.generate(ids, **kwargs)
    compile_config = CompileConfig(fullgraph=True, dynamic=False, mode="default")
    compile_config._compile_all_devices = True  # transformers compiles on CPU only when asked to
    compiled = model.generate(ids, cache_implementation="static", compile_config=compile_config, **kwargs)
    assert hasattr(model, "_compiled_call")
    assert torch.equal(compiled, eager)


@torch.no_grad()
def test_state_dict_stays_plain_and_save_pretrained_round_trips(tmp_path):
    model = glm("seq2seq")
    reference = copy.deepcopy(model)
    pack_for_cpu(model)
    expected = reference.state_dict()
    state = model.state_dict()
    assert sorted(state) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key

    model.save_pretrained(tmp_path)
    reloaded = GLMForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert not any(isinstance(module, PackedLinear) for module in reloaded.modules())
    ids, padding = prompt("seq2seq")
    assert torch.equal(reloaded(input_ids=ids).logits, reference(input_ids=ids).logits)


@torch.no_grad()
def test_load_state_dict_repacks_the_new_weights():
    model, other = glm("causal"), glm("causal")
    torch.manual_seed(5)
    for parameter in other.parameters():
        parameter.normal_(std=0.05)
    pack_for_cpu(model)
    model.load_state_dict(other.state_dict())
    ids, _ = prompt("causal")
    torch.testing.assert_close(model(ids).logits, other(ids).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["weight", "bias"])
def test_load_state_dict_names_a_wrong_shape(name):
    model = pack_for_cpu(glm("causal"))
    state = model.state_dict()
    state[f"glm.layers.0.attention.dense.{name}"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match=rf"glm.layers.0.attention.dense.{name}.*\(1,\)"):
        model.load_state_dict(state)


def test_load_state_dict_names_unexpected_keys_of_a_packed_layer():
    model = pack_for_cpu(glm("causal"))
    state = model.state_dict()
    state["glm.layers.0.attention.dense.scale"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match=r"Unexpected key.*glm.layers.0.attention.dense.scale"):
        model.load_state_dict(state)
    result = model.load_state_dict(state, strict=False)
    assert result.unexpected_keys == ["glm.layers.0.attention.dense.scale"]


def test_a_packed_model_refuses_to_train():
    model = pack_for_cpu(glm("causal"))
    ids, _ = prompt("causal")
    model.train()
    with pytest.raises(RuntimeError, match="packed for inference.*reload the model"):
        model(ids, labels=ids)


@pytest.mark.parametrize("move", [lambda m: m.to(torch.bfloat16), lambda m: m.to("meta")], ids=["bf16", "meta"])
def test_a_packed_model_refuses_another_dtype_or_device(move):
    model = pack_for_cpu(glm("causal"))
    with pytest.raises(RuntimeError, match="packed for float32 inference on CPU.*reload the model"):
        move(model)


def test_a_float32_cpu_move_is_a_no_op():
    model = pack_for_cpu(glm("causal"))
    ids, _ = prompt("causal")
    with torch.no_grad():
        before = model(ids).logits
        assert torch.equal(model.to("cpu").float()(ids).logits, before)


def test_pack_for_cpu_names_a_layer_that_is_not_float32():
    model = glm("causal").to(torch.bfloat16)
    with pytest.raises(ValueError, match=r"layer 'glm.layers.0.attention.query_key_value' has a torch.bfloat16"):
        pack_for_cpu(model)
    assert packed_layers(model) == 0  # nothing was replaced


@torch.no_grad()
def test_quantized_layers_are_left_alone():
    model = glm("causal")
    quantize(model, GLMQuantizationConfig(bits=8))
    reference = copy.deepcopy(model)
    pack_for_cpu(model)
    assert packed_layers(model) == 1  # the output layer, which quantization leaves in float32
    ids, _ = prompt("causal")
    torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=1e-5, atol=1e-5)


def test_glm_hf_serve_packs_a_float32_cpu_model_unless_told_not_to(chatglm_chat):
    pytest.importorskip("fastapi")
    from glm_hf.serving.app import load_for_serving

    packed, tokenizer = load_for_serving(chatglm_chat[0], device="cpu")
    plain, _ = load_for_serving(chatglm_chat[0], device="cpu", cpu_packing=False)
    assert packed_layers(packed) > 0
    assert packed_layers(plain) == 0
    with torch.no_grad():
        assert (
            packed.chat(tokenizer, "hello", max_new_tokens=12, do_sample=False)[0]
            == plain.chat(tokenizer, "hello", max_new_tokens=12, do_sample=False)[0]
        )
