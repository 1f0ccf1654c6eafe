"""Weight-only quantization math and QuantizedLinear (absmax INT8/INT4, zero-point, per-row or per-group)."""

import pytest
import torch

from glm_hf.model.blank_infilling import batch_infilling, infilling_example
from glm_hf.model.quantization import (
    QuantizationSpec,
    QuantizedLinear,
    dequantize_weight,
    pack_int4,
    quantize_linears,
    quantize_weight,
    unpack_int4,
)
from tests.helpers.tiny import tiny_model

SPECS = [
    QuantizationSpec(bits, method, group)
    for bits in (8, 4)
    for method in ("absmax", "zeropoint")
    for group in (None, 16)
]


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_dequantized_values_are_within_half_a_step(spec):
    weight = torch.randn(24, 64, generator=torch.Generator().manual_seed(0)) * 0.05
    weight[3, 5] = 1.0  # an outlier: with groups, only its own group gets the coarse scale
    quantized = quantize_weight(weight, spec)
    restored = dequantize_weight(quantized)
    step = quantized.scale.repeat_interleave(64 // quantized.scale.shape[1], dim=1)
    assert ((restored - weight).abs() <= step / 2 + 1e-6).all()
    expected_bytes = weight.numel() * spec.bits // 8
    assert quantized.codes.numel() * quantized.codes.element_size() == expected_bytes
    if spec.group_size:
        assert (restored[4] - weight[4]).abs().max() < (restored[3] - weight[3]).abs().max()


def test_int4_packing_round_trips_every_code():
    codes = torch.arange(-8, 8, dtype=torch.int8).repeat(3, 2)
    packed = pack_int4(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (3, 16)
    assert torch.equal(unpack_int4(packed), codes)


@pytest.mark.parametrize(
    ("spec", "tolerance"), [(QuantizationSpec(8), 0.02), (QuantizationSpec(4, "zeropoint", 16), 0.15)], ids=str
)
def test_quantized_model_stays_close_to_float(spec, tolerance):
    model = tiny_model(initializer_range=0.05).eval()
    rows = [infilling_example([10, 11, 4, 12, 13, 14], [[20, 21]], [4, 5, 6], 7, 8)]
    batch = batch_infilling(rows, 0)
    inputs = {k: batch[k] for k in ("input_ids", "position_ids", "attention_mask")}
    with torch.no_grad():
        reference = model(**inputs).logits
        quantize_linears(model, spec)
        quantized = model(**inputs).logits
    assert sum(isinstance(m, QuantizedLinear) for m in model.modules()) == 4 * model.config.num_hidden_layers
    assert not isinstance(model.lm_head, QuantizedLinear)
    relative = (quantized - reference).abs().max() / reference.abs().max()
    assert 0 < relative < tolerance
    assert model.generate(torch.tensor([[10, 11, 4, 12]]), max_new_tokens=3).shape[1] >= 5


def test_bad_specs_raise_clear_errors():
    with pytest.raises(ValueError, match="bits must be one of"):
        QuantizationSpec(bits=3)
    with pytest.raises(ValueError, match="method must be one of"):
        QuantizationSpec(method="gptq")
    with pytest.raises(ValueError, match="even number"):
        QuantizationSpec(group_size=15)
    with pytest.raises(ValueError, match="does not divide in_features=48"):
        quantize_weight(torch.randn(4, 48), QuantizationSpec(group_size=32))


@pytest.mark.parametrize("spec", [QuantizationSpec(8), QuantizationSpec(4, "zeropoint", 16)], ids=str)
def test_from_pretrained_quantizes_on_load_and_saved_models_reload_bit_exact(tmp_path, spec):
    from safetensors import safe_open

    from glm_hf import GLMForConditionalGeneration
    from glm_hf.model.quantization import GLMQuantizationConfig

    model = tiny_model(initializer_range=0.05).eval()
    model.save_pretrained(tmp_path / "float")
    config = GLMQuantizationConfig(bits=spec.bits, method=spec.method, group_size=spec.group_size)
    loaded = GLMForConditionalGeneration.from_pretrained(tmp_path / "float", quantization_config=config).eval()
    after_the_fact = quantize_linears(model, spec)
    ids = torch.tensor([[10, 11, 4, 12, 13]])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, after_the_fact(ids).logits)
    for name, buffer in loaded.named_buffers():
        if name.endswith(".weight"):
            assert torch.equal(buffer, dict(after_the_fact.named_buffers())[name]), name
    loaded.save_pretrained(tmp_path / "quantized")
    assert (tmp_path / "quantized" / "quantization.py").is_file()
    with safe_open(str(tmp_path / "quantized" / "model.safetensors"), "pt") as handle:
        codes = handle.get_tensor("glm.layers.0.mlp.dense_h_to_4h.weight")
    assert codes.dtype == (torch.uint8 if spec.bits == 4 else torch.int8)
    reloaded = GLMForConditionalGeneration.from_pretrained(tmp_path / "quantized").eval()
    assert reloaded.config.quantization_config.bits == spec.bits
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, loaded(ids).logits)


def test_quantization_config_rejects_bad_values():
    from glm_hf.model.quantization import GLMQuantizationConfig

    with pytest.raises(ValueError, match="bits must be one of"):
        GLMQuantizationConfig(bits=2)
    with pytest.raises(ValueError, match="method must be one of"):
        GLMQuantizationConfig(method="nf4")


def test_quantize_after_loading_saves_a_reloadable_model_and_refuses_plain_training(tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    import glm_hf
    from glm_hf import GLMForConditionalGeneration

    model = glm_hf.quantize(tiny_model(initializer_range=0.05).eval(), glm_hf.GLMQuantizationConfig(bits=8))
    model.save_pretrained(tmp_path)
    reloaded = GLMForConditionalGeneration.from_pretrained(tmp_path).eval()
    ids = torch.tensor([[10, 11, 4, 12, 13]])
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)
    rows = [infilling_example([10, 11, 4, 12], [[20]], [4, 5, 6], 7, 8)] * 4
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=1, use_cpu=True, report_to=[])
    with pytest.raises(ValueError, match="adapters"):
        Trainer(model=reloaded, args=args, train_dataset=Dataset.from_list(rows))


def test_quantize_command_writes_a_quantized_folder_with_card(tmp_path):
    from huggingface_hub import ModelCard

    from glm_hf import GLMForConditionalGeneration
    from glm_hf.cli import main

    tiny_model().save_pretrained(tmp_path / "float")
    main(["quantize", str(tmp_path / "float"), str(tmp_path / "int4"), "--bits", "4", "--group-size", "16"])
    model = GLMForConditionalGeneration.from_pretrained(tmp_path / "int4")
    assert model.glm.layers[0].attention.query_key_value.weight.dtype == torch.uint8
    card = ModelCard.load(tmp_path / "int4" / "README.md")
    assert "(int4 absmax)" in card.text and '"bits": 4' in card.text
    with pytest.raises(SystemExit, match="does not divide"):
        main(["quantize", str(tmp_path / "float"), str(tmp_path / "bad"), "--group-size", "48"])


def test_w8a8_uses_int8_kernels_and_stays_close_to_weight_only(tmp_path):
    from glm_hf import GLMForConditionalGeneration
    from glm_hf.model.quantization import GLMQuantizationConfig

    model = tiny_model(initializer_range=0.05).eval()
    model.save_pretrained(tmp_path / "float")
    ids = torch.tensor([[10, 11, 4, 12, 13, 14, 15]])
    logits = {}
    for name, activations in (("weight_only", None), ("w8a8", "dynamic_int8")):
        config = GLMQuantizationConfig(bits=8, activations=activations)
        quantized = GLMForConditionalGeneration.from_pretrained(tmp_path / "float", quantization_config=config).eval()
        with torch.no_grad():
            logits[name] = quantized(ids).logits
    layer = quantized.glm.layers[0].mlp.dense_h_to_4h
    assert hasattr(layer, "_packed")  # the int8 kernel ran
    relative = (logits["w8a8"] - logits["weight_only"]).abs().max() / logits["weight_only"].abs().max()
    assert 0 < relative < 0.05
    quantized.save_pretrained(tmp_path / "w8a8")
    reloaded = GLMForConditionalGeneration.from_pretrained(tmp_path / "w8a8").eval()
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, logits["w8a8"])


def test_gpu_int8_kernel_computes_the_same_product_as_dequantizing():
    """The GPU path calls `torch._weight_int8pack_mm`, which also runs on CPU: same codes, scales and bias layout."""
    torch.manual_seed(0)
    layer = QuantizedLinear.from_linear(torch.nn.Linear(64, 48), QuantizationSpec(8))
    x = torch.randn(2, 3, 64)
    fallback = torch.nn.functional.linear(x, dequantize_weight(layer.quantized_weight()), layer.bias)
    torch.testing.assert_close(layer._weight_int8_mm(x), fallback, rtol=1e-5, atol=1e-5)
    assert layer._rowwise_int8()
    assert not QuantizedLinear.from_linear(torch.nn.Linear(64, 48), QuantizationSpec(8, "absmax", 16))._rowwise_int8()


def test_chatglm_style_models_quantize_save_and_reload(tmp_path):
    from glm_hf import GLMForConditionalGeneration
    from glm_hf.model.quantization import GLMQuantizationConfig

    model = tiny_model(
        initializer_range=0.05, position_encoding="rotary_2d", layernorm_style="post_alpha", tie_word_embeddings=False
    ).eval()
    model.save_pretrained(tmp_path / "float")
    config = GLMQuantizationConfig(bits=4, method="zeropoint", group_size=16, modules_to_not_convert=[])
    quantized = GLMForConditionalGeneration.from_pretrained(tmp_path / "float", quantization_config=config).eval()
    assert isinstance(quantized.lm_head, QuantizedLinear)
    quantized.save_pretrained(tmp_path / "int4")
    reloaded = GLMForConditionalGeneration.from_pretrained(tmp_path / "int4").eval()
    ids = torch.tensor([[10, 11, 4, 12, 13]])
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, quantized(ids).logits)
        relative = (quantized(ids).logits - model(ids).logits).abs().max() / model(ids).logits.abs().max()
    assert relative < 0.15


W8A8_ALL = dict(bits=8, activations="dynamic_int8", modules_to_not_convert=[])


def _quantized_the_two_ways(folder, config):
    """The tied tiny GLM saved in `folder`, quantized after loading (`quantize`) and while loading."""
    from glm_hf import GLMForConditionalGeneration
    from glm_hf.model.quantization import GLMQuantizationConfig, quantize

    model = tiny_model(initializer_range=0.05).eval()
    model.save_pretrained(folder)
    after = quantize(model, GLMQuantizationConfig(**config))
    while_loading = GLMForConditionalGeneration.from_pretrained(
        folder, quantization_config=GLMQuantizationConfig(**config)
    )
    return {"quantize": after, "from_pretrained": while_loading.eval()}


def test_quantized_tied_output_layer_is_untied_and_saved_folders_reload_bit_exact(tmp_path):
    """Issue 18: README's fastest mode (W8A8, output layer too) on a tied GLM saved a folder still marked
    tie_word_embeddings, which from_pretrained could not load ("`weight` is not an nn.Parameter")."""
    import json

    from glm_hf import GLMForConditionalGeneration

    ids = torch.tensor([[10, 11, 4, 12, 13]])
    models = _quantized_the_two_ways(tmp_path / "float", W8A8_ALL)
    with torch.no_grad():
        assert torch.equal(models["quantize"](ids).logits, models["from_pretrained"](ids).logits)
    for path, model in models.items():
        assert isinstance(model.lm_head, QuantizedLinear) and model.lm_head.weight.dtype == torch.int8
        assert model.glm.word_embeddings.weight.dtype == torch.float32
        assert not model.config.tie_word_embeddings
        model.save_pretrained(tmp_path / path)
        assert json.loads((tmp_path / path / "config.json").read_text())["tie_word_embeddings"] is False
        reloaded = GLMForConditionalGeneration.from_pretrained(tmp_path / path).eval()
        assert isinstance(reloaded.lm_head, QuantizedLinear)
        with torch.no_grad():
            assert torch.equal(reloaded(ids).logits, model(ids).logits), path


def test_quantized_folder_saved_while_still_marked_tied_loads(tmp_path):
    """Folders written by the bug above (quantized output layer, config still tied) hold the output layer's codes;
    loading unties it instead of failing."""
    import json

    from glm_hf import GLMForConditionalGeneration

    model = _quantized_the_two_ways(tmp_path / "float", W8A8_ALL)["quantize"]
    model.save_pretrained(tmp_path / "w8a8")
    config_file = tmp_path / "w8a8" / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "tie_word_embeddings": True}))
    reloaded = GLMForConditionalGeneration.from_pretrained(tmp_path / "w8a8").eval()
    ids = torch.tensor([[10, 11, 4, 12, 13]])
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)
    assert not reloaded.config.tie_word_embeddings


def test_modules_to_not_convert_keeps_the_same_layers_after_and_while_loading(tmp_path):
    """`quantize` matched names by substring ("dense" also kept mlp.dense_h_to_4h), from_pretrained as transformers
    does (prefix, regex or suffix): one config gave two different models."""
    models = _quantized_the_two_ways(tmp_path / "float", dict(bits=8, modules_to_not_convert=["dense"]))
    kept = {
        path: sorted(name for name, m in model.named_modules() if type(m) is torch.nn.Linear)
        for path, model in models.items()
    }
    assert (
        kept["quantize"] == kept["from_pretrained"] == ["glm.layers.0.attention.dense", "glm.layers.1.attention.dense"]
    )


def test_quantizing_a_quantized_model_is_refused():
    """Issue 18: quantize() on an int8 model kept the int8 layers and recorded an int4 config."""
    import glm_hf
    from glm_hf.model.quantization import GLMQuantizationConfig

    model = glm_hf.quantize(tiny_model(), GLMQuantizationConfig(bits=8))
    with pytest.raises(ValueError, match=r"already quantized \(int8 absmax, per row\).*original full-precision"):
        glm_hf.quantize(model, GLMQuantizationConfig(bits=4))
    with pytest.raises(TypeError, match="GLMQuantizationConfig"):
        glm_hf.quantize(tiny_model(), QuantizationSpec(4))


def test_loading_a_quantized_folder_as_another_format_is_refused(tmp_path):
    """Issue 18: transformers keeps a folder's own quantization_config and only warns about the requested one, so
    `glm-hf quantize int8dir int4dir --bits 4` wrote int8 layers titled int4 and exited 0."""
    from glm_hf import GLMForConditionalGeneration
    from glm_hf.cli import main
    from glm_hf.model.quantization import GLMQuantizationConfig

    tiny_model(initializer_range=0.05).save_pretrained(tmp_path / "float")
    main(["quantize", str(tmp_path / "float"), str(tmp_path / "int8")])
    with pytest.raises(ValueError, match=r"already quantized \(int8 absmax, per row\).*as int4 absmax.*original"):
        GLMForConditionalGeneration.from_pretrained(
            tmp_path / "int8", quantization_config=GLMQuantizationConfig(bits=4)
        )
    for bits in ("4", "8"):  # the same width again used to copy the folder, titled "(int8 absmax) (int8 absmax)"
        with pytest.raises(SystemExit, match=r"glm-hf quantize: .* is already quantized \(int8 absmax, per row\)"):
            main(["quantize", str(tmp_path / "int8"), str(tmp_path / f"again{bits}"), "--bits", bits])
        assert not (tmp_path / f"again{bits}").exists()
    ids = torch.tensor([[10, 11, 4, 12, 13]])
    plain = GLMForConditionalGeneration.from_pretrained(tmp_path / "int8").eval()
    same = GLMForConditionalGeneration.from_pretrained(tmp_path / "int8", quantization_config=GLMQuantizationConfig())
    with torch.no_grad():
        assert torch.equal(plain(ids).logits, same.eval()(ids).logits)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(bits=8.0), "bits must be one of"),
        (dict(bits=True), "bits must be one of"),
        (dict(group_size=-4), "even number >= 2"),
        (dict(group_size=0), "even number >= 2"),
        (dict(group_size=16.0), "even number >= 2"),
        (dict(activations="int8"), "activations must be one of"),
        (dict(modules_to_not_convert="lm_head"), "must be a list of module names"),
        (dict(modules_to_not_convert=[None]), "must be a list of module names"),
        (dict(bit=4), r"unknown option\(s\) \['bit'\]"),
        (dict(quant_method="gptq"), "quant_method 'glm_hf'"),
    ],
    ids=str,
)
def test_quantization_config_rejects_silently_wrong_values(options, message):
    """Each of these used to load with defaults or odd results (bit=4 quantized to int8; a string
    modules_to_not_convert kept every layer ending in one of its letters; 8.0 passed as 8)."""
    from glm_hf.model.quantization import GLMQuantizationConfig

    with pytest.raises(ValueError, match=message):
        GLMQuantizationConfig(**options)


def test_int4_layer_with_an_odd_input_width_is_refused_when_built():
    with pytest.raises(ValueError, match="in_features must be even"):
        QuantizedLinear(15, 4, bias=False, spec=QuantizationSpec(4))


W4A8 = dict(bits=4, activations="dynamic_int8")


def test_w4a8_layer_multiplies_int4_codes_with_8_bit_activations():
    """W4A8 widens the int4 codes to int8 for the quantized engine's kernel and quantizes activations to all 8 bits
    (W8A8 uses 7: int8 codes could saturate AVX2's int16 pair sums, int4 codes cannot). Activations already on a
    256-level grid, spanning it from end to end, therefore pass unrounded: the output is the float product with
    the dequantized int4 weight, to float rounding."""
    torch.manual_seed(0)
    layer = QuantizedLinear.from_linear(torch.nn.Linear(64, 48), QuantizationSpec(4, activations="dynamic_int8"))
    assert layer.weight.dtype == torch.uint8 and layer.weight.shape == (48, 32)
    step, zero = 2.0**-5, 100  # the grid: (0..255 - zero) * step; the kernel finds this step and zero point
    x = (torch.randint(0, 256, (2, 3, 64)) - zero) * step
    x[0, 0, :2] = torch.tensor([-zero, 255 - zero]) * step
    expected = torch.nn.functional.linear(x, dequantize_weight(layer.quantized_weight()), layer.bias)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    assert hasattr(layer, "_packed")  # the int8 kernel ran


def test_w4a8_codes_run_weight_only_too_and_stay_close_to_it(tmp_path):
    """W4A8 stores the weight-only int4 format (packed codes, one scale per row), so its state dict loads into a
    weight-only int4 model. On the same codes the two differ only by W4A8 rounding each linear layer's input to 256
    levels per tensor (a step of 1/255 of its range, about 0.4%); through the tiny model's 8 quantized layers that
    stays within 1-2% of the largest logit (0.05 leaves room, as for W8A8)."""
    from glm_hf import GLMForConditionalGeneration
    from glm_hf.model.quantization import GLMQuantizationConfig

    tiny_model(initializer_range=0.05).save_pretrained(tmp_path)
    ids = torch.tensor([[10, 11, 4, 12, 13, 14, 15]])
    models = {
        name: GLMForConditionalGeneration.from_pretrained(
            tmp_path, quantization_config=GLMQuantizationConfig(bits=4, activations=activations)
        ).eval()
        for name, activations in (("int4", None), ("w4a8", "dynamic_int8"))
    }
    models["int4"].load_state_dict(models["w4a8"].state_dict())
    with torch.no_grad():
        logits = {name: model(ids).logits for name, model in models.items()}
    assert hasattr(models["w4a8"].glm.layers[0].mlp.dense_h_to_4h, "_packed")
    assert not hasattr(models["int4"].glm.layers[0].mlp.dense_h_to_4h, "_packed")
    relative = (logits["w4a8"] - logits["int4"]).abs().max() / logits["int4"].abs().max()
    assert 0 < relative < 0.05


def test_w4a8_row_scales_give_the_least_squared_rounding_error():
    """W4A8 shrinks each row's absmax scale by the ratio (1 to 0.5) with the least squared rounding error: no row
    rounds worse than plain absmax int4, a row with an outlier clips it for a finer step, and on rows as wide as
    glm-large's (1024) the total error falls by about a third."""
    weight = torch.randn(64, 1024, generator=torch.Generator().manual_seed(0)) * 0.02
    weight[5, 7] = 0.5
    quantized = {
        name: quantize_weight(weight, QuantizationSpec(4, activations=activations))
        for name, activations in (("absmax", None), ("w4a8", "dynamic_int8"))
    }
    errors = {name: (dequantize_weight(q) - weight).square().sum(1) for name, q in quantized.items()}
    assert (errors["w4a8"] <= errors["absmax"]).all()
    assert errors["w4a8"].sum() < 0.75 * errors["absmax"].sum()
    scale = quantized["w4a8"].scale
    assert scale[5] < 0.6 * quantized["absmax"].scale[5]
    assert (scale <= quantized["absmax"].scale).all() and (scale >= 0.5 * quantized["absmax"].scale - 1e-9).all()


def test_w4a8_folders_hold_int4_codes_and_reload_bit_exact(tmp_path):
    """int4 on disk, int8 only in the kernel's packed copy: the saved folder holds the packed int4 codes and
    scales; quantizing after or while loading gives the same model, and saving, reloading and saving again gives
    the same state dict, the same logits and the same file, byte for byte. The tied output layer is quantized too,
    so the int4 codes of the embedding matrix go through the same path."""
    from glm_hf import GLMForConditionalGeneration

    ids = torch.tensor([[10, 11, 4, 12, 13]])
    models = _quantized_the_two_ways(tmp_path / "float", dict(W4A8, modules_to_not_convert=[]))
    with torch.no_grad():
        assert torch.equal(models["quantize"](ids).logits, models["from_pretrained"](ids).logits)
    model = models["from_pretrained"]
    model.save_pretrained(tmp_path / "w4a8")
    reloaded = GLMForConditionalGeneration.from_pretrained(tmp_path / "w4a8").eval()
    assert reloaded.config.quantization_config.to_dict() == model.config.quantization_config.to_dict()
    state, again = model.state_dict(), reloaded.state_dict()
    assert state.keys() == again.keys()
    for key, tensor in state.items():
        assert again[key].dtype == tensor.dtype and torch.equal(again[key], tensor), key
    assert state["lm_head.weight"].dtype == state["glm.layers.0.mlp.dense_h_to_4h.weight"].dtype == torch.uint8
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)
    assert hasattr(reloaded.lm_head, "_packed")
    reloaded.save_pretrained(tmp_path / "again")
    saved = (tmp_path / "w4a8" / "model.safetensors").read_bytes()
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == saved


@pytest.mark.parametrize(
    ("options", "reason"),
    [(dict(group_size=16), "a scale per group of columns"), (dict(method="zeropoint"), "zero-point offsets")],
    ids=str,
)
def test_w4a8_refuses_grouped_and_zero_point_int4(options, reason):
    """The int8 kernel takes one scale per output row and codes centred on zero: a scale per group would need one
    kernel call per group, and zero-point offsets are not whole codes, so neither fits; W8A8 refuses them alike."""
    from glm_hf.model.quantization import GLMQuantizationConfig

    for bits in (4, 8):
        with pytest.raises(ValueError, match=rf"dynamic_int8.*needs method='absmax' and group_size=None.*{reason}"):
            GLMQuantizationConfig(bits=bits, activations="dynamic_int8", **options)


def test_quantize_command_writes_w4a8_folders(tmp_path):
    from glm_hf import GLMForConditionalGeneration
    from glm_hf.cli import main

    tiny_model(initializer_range=0.05).save_pretrained(tmp_path / "float")
    main(["quantize", str(tmp_path / "float"), str(tmp_path / "w4a8"), "--bits", "4", "--activations", "dynamic_int8"])
    model = GLMForConditionalGeneration.from_pretrained(tmp_path / "w4a8").eval()
    assert model.config.quantization_config.spec.describe() == "int4 absmax, per row, W4A8"
    layer = model.glm.layers[0].attention.query_key_value
    assert layer.weight.dtype == torch.uint8
    with torch.no_grad():
        model(torch.tensor([[10, 11, 4, 12]]))
    assert hasattr(layer, "_packed")
    command = ["quantize", str(tmp_path / "float"), str(tmp_path / "bad"), "--bits", "4", "--activations"]
    with pytest.raises(SystemExit, match="group_size=None"):
        main([*command, "dynamic_int8", "--group-size", "16"])


LOAD_MEMORY_PROBE = """
import json, sys
from glm_hf import GLMForConditionalGeneration, GLMQuantizationConfig
from glm_hf.model import quantization


def anonymous():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("RssAnon:"))


samples, convert = [], quantization._QuantizeOnLoad.convert


def sampled(self, *args, **kwargs):
    tensors = convert(self, *args, **kwargs)
    samples.append(anonymous())
    return tensors


quantization._QuantizeOnLoad.convert = sampled
base = anonymous()
config = GLMQuantizationConfig(**json.loads(sys.argv[2]))
model = GLMForConditionalGeneration.from_pretrained(sys.argv[1], quantization_config=config)
samples.append(anonymous())
layers = [module for module in model.modules() if isinstance(module, quantization.QuantizedLinear)]
kept = sum(tensor.numel() * tensor.element_size() for layer in layers for tensor in layer.buffers())
print(json.dumps({"growth": max(samples) - base, "quantized": kept, "layers": len(layers)}))
"""


@pytest.fixture(scope="module")
def float_folder_of_400_mb(tmp_path_factory):
    """A saved fp32 GLM of 8 layers x 1024 hidden (vocab 1024): 403 MB, nearly all of it in linear layers."""
    from glm_hf import GLMConfig, GLMForConditionalGeneration

    folder = tmp_path_factory.mktemp("float_400mb")
    config = GLMConfig(
        vocab_size=1024, hidden_size=1024, num_hidden_layers=8, num_attention_heads=16, max_position_embeddings=64
    )
    torch.manual_seed(0)
    GLMForConditionalGeneration(config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "options",
    [dict(bits=8), dict(bits=4, method="zeropoint", group_size=64), dict(bits=4, activations="dynamic_int8")],
    ids=str,
)
def test_quantizing_while_loading_keeps_only_the_codes(float_folder_of_400_mb, options):
    """`from_pretrained(float_folder, quantization_config=...)` must never hold more anonymous memory (RssAnon, read
    after each weight is quantized and after loading, in a fresh single-threaded process) than the quantized layers
    plus one float weight matrix, the largest. The checkpoint stays memory-mapped (page cache, not anonymous memory).
    Before quantization.py's `_release_freed_memory`, glibc's heap grew by freed quantization temporaries with every
    weight: this test measured 374 / 92 / 328 MB for these modes' 96 / 60 / 48 MB of codes and scales (transformers
    5.24, glibc 2.36); how much depends on what else the process allocated, so three modes are checked."""
    import json
    import os
    import subprocess
    import sys

    from glm_hf.model import quantization

    if not os.path.exists("/proc/self/status") or quantization._MALLOC_TRIM is None:
        pytest.skip("reads Linux's RssAnon; the heap is handed back with glibc's malloc_trim")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-c", LOAD_MEMORY_PROBE, str(float_folder_of_400_mb), json.dumps(options)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["layers"] == 4 * 8
    largest_float_weight = 4096 * 1024 * 4
    assert measured["growth"] <= measured["quantized"] + largest_float_weight, measured
