"""Weight-only quantization of GLM's linear layers, as GLM-130B did for inference memory: absmax INT8/INT4 (a scale
per output row or per group of input columns) and zero-point INT4/INT8 (a scale and an offset per row or group).

INT4 values are packed two per byte. `QuantizedLinear` dequantizes and multiplies, which is correct on every device
and dtype; the quantizer registration, faster kernels and (de)serialization build on this file. It imports only
torch and transformers, so it can travel with a saved model's code.
"""

import ctypes
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from transformers import ConversionOps
from transformers.quantizers import HfQuantizer, register_quantization_config, register_quantizer
from transformers.utils.quantization_config import QuantizationConfigMixin

from .transformers_compat import get_module_from_name, should_convert_module

QUANT_METHOD = "glm_hf"

BITS = (4, 8)
METHODS = ("absmax", "zeropoint")
ACTIVATIONS = (None, "dynamic_int8")


@dataclass(frozen=True)
class QuantizationSpec:
    """How weights are quantized: `bits` (8 or 4), `method` ("absmax": symmetric, scale only; "zeropoint":
    asymmetric, scale and offset), `group_size` (None: one scale per output row; else per group of that many
    input columns) and `activations` (None: weight-only; "dynamic_int8": activations quantized to int8 per call and
    multiplied with torch's int8 kernel on CPU, which needs absmax codes and one scale per row: W8A8 with bits=8,
    W4A8 with bits=4, whose int4 codes are stored packed and widened to int8 for the kernel)."""

    bits: int = 8
    method: str = "absmax"
    group_size: int | None = None
    activations: str | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.bits) or self.bits not in BITS:
            raise ValueError(f"bits must be one of {BITS}, got {self.bits!r}.")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}.")
        group = self.group_size
        if group is not None and (not _is_int(group) or group < 2 or group % 2):
            raise ValueError(f"group_size must be None or an even number >= 2 (an int), got {group!r}.")
        if self.activations not in ACTIVATIONS:
            raise ValueError(f"activations must be one of {ACTIVATIONS}, got {self.activations!r}.")
        if self.activations and (self.method, self.group_size) != ("absmax", None):
            raise ValueError(
                "activations='dynamic_int8' (W8A8, or W4A8 with bits=4) needs method='absmax' and group_size=None: "
                "the int8 kernel takes integer codes centred on zero with one scale per output row, so it cannot "
                "apply zero-point offsets (not whole codes) or a scale per group of columns."
            )

    def groups(self, in_features: int) -> int:
        """Number of column groups of a weight with `in_features` columns (checks that the groups divide it and, for
        INT4, that the columns pair up into bytes)."""
        if self.bits == 4 and in_features % 2:
            raise ValueError(f"INT4 packs two columns per byte, so in_features must be even, got {in_features}.")
        if self.group_size is None:
            return 1
        if in_features % self.group_size:
            raise ValueError(
                f"group_size={self.group_size} does not divide in_features={in_features}; pick a divisor "
                "(e.g. 32, 64 or 128 for power-of-two sizes) or group_size=None."
            )
        return in_features // self.group_size

    def describe(self) -> str:
        """A short human name, e.g. "int4 zeropoint, groups of 64", "int8 absmax, per row, W8A8" or
        "int4 absmax, per row, W4A8"."""
        grouping = "per row" if self.group_size is None else f"groups of {self.group_size}"
        return f"int{self.bits} {self.method}, {grouping}" + (f", W{self.bits}A8" if self.activations else "")


def _is_int(value: object) -> bool:
    """True for a real integer (not a bool, not a float such as 8.0, which would slip through `in (4, 8)`)."""
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class QuantizedWeight:
    """Integer codes (int8, or two int4 codes per uint8), `scale` `[out, groups]` and, for zero-point, `offset`
    `[out, groups]` (the value of code 0)."""

    codes: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor | None
    in_features: int


# Rows are quantized in blocks of about this many values (1 MiB of float32), so the float temporaries of quantizing
# (a dozen, each the weight's size when a weight was quantized whole; more for W4A8's clip search) stay small next to
# the weight's codes, however large the weight.
QUANTIZE_BLOCK = 2**18


def quantize_weight(weight: torch.Tensor, spec: QuantizationSpec) -> QuantizedWeight:
    """Quantizes a `[out, in]` float weight; the result dequantizes within half a quantization step per value,
    except the few largest values of a W4A8 row, which its least-squares scale clips (`_least_squares_clip`).
    Every row is quantized on its own, a block of rows at a time (`QUANTIZE_BLOCK`), into outputs allocated first."""
    if weight.dim() != 2:
        raise ValueError(f"quantize_weight takes a 2D [out, in] weight, got shape {tuple(weight.shape)}.")
    out_features, in_features = weight.shape
    groups = spec.groups(in_features)
    columns = in_features // 2 if spec.bits == 4 else in_features
    device = weight.device
    codes = torch.empty(out_features, columns, dtype=torch.uint8 if spec.bits == 4 else torch.int8, device=device)
    scale = torch.empty(out_features, groups, dtype=torch.float32, device=device)
    zeropoint = spec.method == "zeropoint"
    offset = torch.empty(out_features, groups, dtype=torch.float32, device=device) if zeropoint else None
    rows = max(1, QUANTIZE_BLOCK // max(1, in_features))
    for start in range(0, out_features, rows):
        block = slice(start, start + rows)
        block_codes, scale[block], block_offset = _quantize_rows(weight[block], spec, groups)
        codes[block] = pack_int4(block_codes) if spec.bits == 4 else block_codes
        if offset is not None:
            offset[block] = block_offset
    return QuantizedWeight(codes, scale, offset, in_features)


def _quantize_rows(
    weight: torch.Tensor, spec: QuantizationSpec, groups: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Signed int8 codes `[rows, in]` (int4 ones not yet packed), scale and offset (or None) `[rows, groups]`."""
    rows, in_features = weight.shape
    grouped = weight.float().contiguous().reshape(rows, groups, in_features // groups)
    if spec.method == "absmax":
        limit = 2 ** (spec.bits - 1) - 1
        scale = grouped.abs().amax(-1).clamp(min=1e-12) / limit
        if spec.bits == 4 and spec.activations:
            scale = scale * _least_squares_clip(grouped, scale, limit)
        codes = torch.round(grouped / scale[..., None]).clamp(-limit, limit)
        offset = None
    else:
        top = 2**spec.bits - 1
        low, high = grouped.amin(-1), grouped.amax(-1)
        scale = (high - low).clamp(min=1e-12) / top
        codes = torch.round((grouped - low[..., None]) / scale[..., None]).clamp(0, top) - 2 ** (spec.bits - 1)
        offset = low + 2 ** (spec.bits - 1) * scale  # value of the (shifted) code 0
    return codes.reshape(rows, in_features).to(torch.int8), scale, offset


CLIP_RATIOS = torch.linspace(1.0, 0.5, 21).tolist()


def _least_squares_clip(grouped: torch.Tensor, scale: torch.Tensor, limit: int) -> torch.Tensor:
    """For each row (or group), the ratio in `CLIP_RATIOS` (1.0 first: plain absmax wins ties) by which shrinking
    the absmax `scale` gives the least squared rounding error. With per-row int4's 15 levels, a row's few largest
    values set a coarse step for all the others; clipping them buys a finer step. W4A8 rounds this way: on a
    briefly trained demo model its answer-perplexity cost fell from 3.3% to 0.9% of fp32's (issue 28)."""
    normalized = grouped / scale[..., None]  # errors compare in steps of the absmax scale, the same per row
    best_error = best_ratio = None
    for ratio in CLIP_RATIOS:
        error = torch.round(normalized / ratio).clamp_(-limit, limit).mul_(ratio).sub_(normalized).square_().sum(-1)
        if best_error is None:
            best_error, best_ratio = error, torch.ones_like(scale)
        else:
            better = error < best_error
            best_error = torch.where(better, error, best_error)
            best_ratio = torch.where(better, ratio, best_ratio)
    return best_ratio


def dequantize_weight(quantized: QuantizedWeight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The `[out, in]` float weight that `quantized` stands for."""
    codes = quantized.codes
    if codes.dtype == torch.uint8:
        codes = unpack_int4(codes)
    out_features, groups = quantized.scale.shape
    values = codes.reshape(out_features, groups, -1).float() * quantized.scale[..., None].float()
    if quantized.offset is not None:
        values = values + quantized.offset[..., None].float()
    return values.reshape(out_features, quantized.in_features).to(dtype)


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Signed int4 codes (-8..7) `[out, in]` → uint8 `[out, in / 2]`: column 2j in the low nibble, 2j+1 high."""
    nibbles = (codes.to(torch.int16) + 8).to(torch.uint8)
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of `pack_int4`."""
    low = (packed & 0x0F).to(torch.int8) - 8
    high = (packed >> 4).to(torch.int8) - 8
    return torch.stack([low, high], dim=-1).reshape(packed.shape[0], -1)


class QuantizedLinear(nn.Module):
    """A linear layer with quantized weights (buffers `weight`: the integer codes, `weight_scale`, and
    `weight_offset` for zero-point) and a float bias. The forward pass uses a kept int8 kernel where one was
    measured to help (W8A8 and W4A8 on CPU, weight-only int8 on CUDA) and otherwise dequantizes and multiplies,
    which is correct everywhere. Built empty (for loading a quantized checkpoint) or with `from_linear`."""

    def __init__(self, in_features: int, out_features: int, bias: bool, spec: QuantizationSpec):
        super().__init__()
        self.in_features, self.out_features, self.spec = in_features, out_features, spec
        groups = spec.groups(in_features)
        if spec.bits == 4:
            codes = torch.zeros(out_features, in_features // 2, dtype=torch.uint8)
        else:
            codes = torch.zeros(out_features, in_features, dtype=torch.int8)
        self.register_buffer("weight", codes)
        self.register_buffer("weight_scale", torch.ones(out_features, groups))
        offset = torch.zeros(out_features, groups) if spec.method == "zeropoint" else None
        self.register_buffer("weight_offset", offset)
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, spec: QuantizationSpec) -> "QuantizedLinear":
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, spec)
        layer.load_quantized(quantize_weight(linear.weight.detach(), spec))
        if linear.bias is not None:
            layer.bias.data = linear.bias.detach().clone()
        return layer

    def load_quantized(self, quantized: QuantizedWeight) -> None:
        self.weight = quantized.codes
        self.weight_scale = quantized.scale
        self.weight_offset = quantized.offset

    def quantized_weight(self) -> QuantizedWeight:
        return QuantizedWeight(self.weight, self.weight_scale, self.weight_offset, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spec.activations == "dynamic_int8" and x.device.type == "cpu" and x.dtype == torch.float32:
            return self._dynamic_int8(x)
        if x.device.type == "cuda" and x.dtype == torch.bfloat16 and self._rowwise_int8():
            return self._weight_int8_mm(x)
        weight = dequantize_weight(self.quantized_weight(), x.dtype)
        return nn.functional.linear(x, weight, None if self.bias is None else self.bias.to(x.dtype))

    def _rowwise_int8(self) -> bool:
        spec = self.spec
        return spec.bits == 8 and spec.method == "absmax" and spec.group_size is None

    def _weight_int8_mm(self, x: torch.Tensor) -> torch.Tensor:
        """Weight-only int8 on the GPU: torch's `_weight_int8pack_mm` (int8 codes times per-row scales, no float
        copy of the weight). Seen on an H100 in bf16: 1.5x faster than dequantize-and-matmul, still slower than a
        bf16 matmul, so this mode is for memory. Used only where it was seen to work (CUDA, bf16, per-row absmax)."""
        flat = x.reshape(-1, self.in_features).contiguous()
        out = torch._weight_int8pack_mm(flat, self.weight, self.weight_scale[:, 0].to(x.dtype))
        if self.bias is not None:
            out = out + self.bias.to(x.dtype)
        return out.reshape(*x.shape[:-1], -1)

    def _dynamic_int8(self, x: torch.Tensor) -> torch.Tensor:
        """W8A8 (and W4A8) on CPU: torch's quantized-engine dynamic linear (fbgemm/x86) on the int8 codes,
        prepacked once; int4 codes are widened to int8 for it (packed int4 stays the stored form, the kernel's
        prepacked copy is int8). Measured on the project's AVX2 CPU: 4-19x faster than fp32 for layers of 768
        columns and more, slower for tiny ones (see benchmarks/bench_quantization.py and bench_int8_kernels.py).

        Activations are quantized to uint8 per call. With int8 codes they use 7 bits (`reduce_range`): AVX2's
        u8 x s8 pair sums saturate in int16 otherwise (2 * 255 * 127 > 32767). Int4 codes (-8..7) keep pair sums
        within 2 * 255 * 8, so W4A8 keeps all 8 bits, halving its activation rounding."""
        key = (self.weight.data_ptr(), self.weight_scale.data_ptr())
        if getattr(self, "_packed_key", None) != key:
            codes = unpack_int4(self.weight) if self.spec.bits == 4 else self.weight
            with warnings.catch_warnings():  # torch marks quantized tensors deprecated; their kernels are kept
                warnings.simplefilter("ignore", UserWarning)
                zeros = torch.zeros(self.out_features, dtype=torch.long)
                codes = torch._make_per_channel_quantized_tensor(codes, self.weight_scale[:, 0].double(), zeros, 0)
                self._packed = torch.ops.quantized.linear_prepack(codes, self.bias)
            self._packed_key = key
        flat = x.reshape(-1, self.in_features).contiguous()
        reduce_range = self.spec.bits == 8
        return torch.ops.quantized.linear_dynamic(flat, self._packed, reduce_range).reshape(*x.shape[:-1], -1)

    def extra_repr(self) -> str:
        spec = self.spec
        return f"in={self.in_features}, out={self.out_features}, int{spec.bits} {spec.method}, group={spec.group_size}"


def quantize_linears(
    model: nn.Module, spec: QuantizationSpec, modules_to_not_convert: tuple[str, ...] = ("lm_head",)
) -> nn.Module:
    """Replaces, in place, every `nn.Linear` not matched by `modules_to_not_convert` by a `QuantizedLinear`
    (embeddings are never linear layers, so they stay as they are). Names match as in transformers' own quantizers
    and in `from_pretrained(..., quantization_config=...)`: a prefix up to a module boundary, a regex, or a suffix
    ("dense" keeps `attention.dense` only, not `mlp.dense_h_to_4h`). Returns the model."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and should_convert_module(name, list(modules_to_not_convert)):
            model.set_submodule(name, QuantizedLinear.from_linear(module, spec))
    return model


def _tied_linears(model: nn.Module) -> list[str]:
    """Names of the linear layers whose weight is tied to another parameter: GLM's output layer when it shares the
    word embedding matrix (`tie_word_embeddings`)."""
    names = [key.removesuffix(".weight") for key in getattr(model, "all_tied_weights_keys", {})]
    return [name for name in names if isinstance(model.get_submodule(name), nn.Linear)]


def _untie_word_embeddings(model: nn.Module) -> None:
    """Marks the output layer as separate from the word embeddings. A quantized output layer holds integer codes of
    the embedding matrix, not the matrix itself, so it can no longer be tied: a saved folder whose config still said
    `tie_word_embeddings=True` would not load back."""
    model.config.tie_word_embeddings = False
    model.all_tied_weights_keys = model.get_expanded_tied_weights_keys(all_submodels=True)


class GLMQuantizationConfig(QuantizationConfigMixin):
    """Weight-only quantization for GLM through transformers' quantizer API:
    `from_pretrained(path, quantization_config=GLMQuantizationConfig(bits=4))` quantizes while loading, and a saved
    quantized model reloads without re-quantizing. `modules_to_not_convert` (default: the output layer) keeps the
    linear layers it matches (as transformers' quantizers match: a prefix up to a module boundary, a regex or a
    suffix) in full precision; embeddings are never quantized. With `modules_to_not_convert=[]` a tied output layer
    is quantized from the embedding matrix and untied from it (`tie_word_embeddings` becomes False)."""

    def __init__(
        self,
        bits: int = 8,
        method: str = "absmax",
        group_size: int | None = None,
        modules_to_not_convert: list[str] | None = None,
        activations: str | None = None,
        quant_method: str = QUANT_METHOD,
        **unknown,
    ):
        if unknown:  # a misspelt option (bit=4) would otherwise quantize with the defaults
            raise ValueError(
                f"GLMQuantizationConfig got unknown option(s) {sorted(unknown)}; the options are bits, method, "
                "group_size, modules_to_not_convert and activations."
            )
        if quant_method != QUANT_METHOD:
            raise ValueError(f"GLMQuantizationConfig is quant_method {QUANT_METHOD!r}, got {quant_method!r}.")
        self.quant_method = QUANT_METHOD
        self.bits, self.method, self.group_size, self.activations = bits, method, group_size, activations
        self.modules_to_not_convert = _module_names(modules_to_not_convert)
        QuantizationSpec(bits, method, group_size, activations)  # raises on bad values

    @property
    def spec(self) -> QuantizationSpec:
        return QuantizationSpec(self.bits, self.method, self.group_size, self.activations)

    def to_dict(self) -> dict:
        return {
            "quant_method": self.quant_method,
            "bits": self.bits,
            "method": self.method,
            "group_size": self.group_size,
            "activations": self.activations,
            "modules_to_not_convert": self.modules_to_not_convert,
        }


def _module_names(names: list[str] | None) -> list[str]:
    """`modules_to_not_convert` as a list of names (default: the output layer). A bare string is refused: as a list
    of its letters it would keep every layer whose name ends with one of them in full precision."""
    if names is None:
        return ["lm_head"]
    if isinstance(names, str) or not all(isinstance(name, str) for name in names):
        raise ValueError(
            f"modules_to_not_convert must be a list of module names, e.g. ['lm_head'] or [], got {names!r}."
        )
    return list(names)


def _glibc_malloc_trim():
    """glibc's `malloc_trim`, or None elsewhere (musl, macOS, Windows)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):
        return None


_MALLOC_TRIM = _glibc_malloc_trim()


def _release_freed_memory() -> None:
    """Hands the freed parts of the C heap back to the operating system (glibc only; elsewhere nothing).

    Called after quantizing each weight while loading. glibc's malloc serves the float temporaries of quantizing from
    its heap (its mmap threshold rises to the largest block it freed, up to 32 MiB), and the small objects that loading
    keeps (codes, scales, tensor and Python bookkeeping) land in the holes those temporaries leave, so the freed
    memory was neither reused nor returned and the heap grew with every weight: quantizing a 24-layer, 1024-hidden GLM
    while loading peaked at 0.35-2.6 GB of anonymous memory (int8, 0.3 GB of codes) and 0.2-1.2 GB (int4, 0.15 GB),
    varying with unrelated changes to what the process had allocated before. The float checkpoint itself stays
    memory-mapped. `malloc_trim` returns every free page, holes included (about 1 ms per weight here)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class _QuantizeOnLoad(ConversionOps):
    """Quantizes a float weight as it is read from the checkpoint, so the full-precision model never exists."""

    def __init__(self, quantizer: "GLMQuantizer"):
        self.hf_quantizer = quantizer

    def convert(self, input_dict: dict, full_layer_name: str | None = None, **kwargs) -> dict:
        weight = next(iter(input_dict.values()))
        weight = weight[0] if isinstance(weight, list) else weight
        quantized = quantize_weight(weight, self.hf_quantizer.quantization_config.spec)
        _release_freed_memory()
        prefix = full_layer_name.removesuffix(".weight")
        tensors = {full_layer_name: quantized.codes, f"{prefix}.weight_scale": quantized.scale}
        if quantized.offset is not None:
            tensors[f"{prefix}.weight_offset"] = quantized.offset
        return tensors


class GLMQuantizer(HfQuantizer):
    """Swaps linear layers for `QuantizedLinear` before the weights load; quantizes float checkpoints on the fly.

    A tied output layer that is to be quantized has no weight of its own in a float checkpoint (it is the embedding
    matrix), so it loads tied and is quantized from the embeddings after loading; a quantized checkpoint stores its
    codes, so it is untied before loading (this also loads folders saved while still marked tied)."""

    requires_calibration = False

    def _process_model_before_weight_loading(self, model, dtype=None, **kwargs):
        self.modules_to_not_convert = self.get_modules_to_not_convert(
            model, self.quantization_config.modules_to_not_convert, getattr(model, "_keep_in_fp32_modules", None)
        )
        tied = [name for name in _tied_linears(model) if should_convert_module(name, self.modules_to_not_convert)]
        self.quantize_after_loading = [] if self.pre_quantized else tied
        if tied and self.pre_quantized:
            _untie_word_embeddings(model)
        spec, later = self.quantization_config.spec, self.quantize_after_loading
        for name, module in list(model.named_modules()):
            convert = should_convert_module(name, self.modules_to_not_convert) and name not in later
            if isinstance(module, nn.Linear) and convert:
                with torch.device("meta"):
                    layer = QuantizedLinear(module.in_features, module.out_features, module.bias is not None, spec)
                model.set_submodule(name, layer)

    def param_needs_quantization(self, model, param_name: str, **kwargs) -> bool:
        module, tensor_name = get_module_from_name(model, param_name)
        return isinstance(module, QuantizedLinear) and tensor_name == "weight" and not self.pre_quantized

    def get_quantize_ops(self) -> ConversionOps:
        return _QuantizeOnLoad(self)

    def _process_model_after_weight_loading(self, model, **kwargs):
        spec = self.quantization_config.spec
        for name in self.quantize_after_loading:
            model.set_submodule(name, QuantizedLinear.from_linear(model.get_submodule(name), spec))
        if self.quantize_after_loading:
            _untie_word_embeddings(model)
        return model

    def is_serializable(self) -> bool:
        return True

    @property
    def is_trainable(self) -> bool:
        return False


def quantize(model: nn.Module, config: GLMQuantizationConfig) -> nn.Module:
    """Quantizes a loaded full-precision GLM in place, as `from_pretrained(..., quantization_config=config)` would
    have: its linear layers become `QuantizedLinear` (a tied output layer is untied, see `_untie_word_embeddings`), and
    the model records the config (so `save_pretrained` writes a quantized checkpoint) and the quantizer (so `Trainer`
    refuses to train it without adapters). An already quantized model is refused: its layers hold integer codes."""
    if not isinstance(config, GLMQuantizationConfig):
        raise TypeError(f"quantize takes a GLMQuantizationConfig, got {type(config).__name__}.")
    _refuse_quantized(model, config)
    skip = tuple(config.modules_to_not_convert)
    tied = [name for name in _tied_linears(model) if should_convert_module(name, list(skip))]
    quantize_linears(model, config.spec, skip)
    if tied:
        _untie_word_embeddings(model)
    model.config.quantization_config = config
    model.hf_quantizer = GLMQuantizer(config, pre_quantized=True)
    model.is_quantized = True
    return model


def _refuse_quantized(model: nn.Module, requested: GLMQuantizationConfig) -> None:
    """Raises a ValueError if `model` is already quantized: quantizing again would leave its layers as they are while
    the config claimed the new format, and rounding codes again only loses precision."""
    saved = getattr(model.config, "quantization_config", None)
    if saved is None and not any(isinstance(module, QuantizedLinear) for module in model.modules()):
        return
    raise ValueError(
        f"this model is already quantized ({_describe(saved)}), so it cannot be quantized again to "
        f"{requested.spec.describe()}; quantize the original full-precision model or folder instead."
    )


def refuse_ignored_quantization(model: nn.Module, requested: QuantizationConfigMixin | None) -> None:
    """Raises a ValueError after `from_pretrained(folder, quantization_config=requested)` when the folder was already
    quantized in another format. transformers then keeps the folder's format and only warns, so the request would be
    silently ignored (`glm-hf quantize int8dir int4dir --bits 4` would write int8 layers under an int4 title).
    No request, or the folder's own config, is fine."""
    quantizer = getattr(model, "hf_quantizer", None)
    if requested is None or quantizer is None or not quantizer.pre_quantized:
        return
    saved = quantizer.quantization_config
    if saved.to_dict() == requested.to_dict():
        return
    raise ValueError(
        f"{model.config.name_or_path} is already quantized ({_describe(saved)}); it cannot be loaded as "
        f"{_describe(requested)}. Quantize the original full-precision folder instead, or load this one without "
        "quantization_config."
    )


def _describe(config: QuantizationConfigMixin | dict | None) -> str:
    """A short name for a quantization config: GLM's own by its spec (also when the config comes from another import
    of this file, a saved folder's remote code), any other by its quant method (a dict: a config read from JSON)."""
    if isinstance(config, dict):
        return str(config.get("quant_method", "unknown method"))
    spec = getattr(config, "spec", None)
    return spec.describe() if spec is not None else str(getattr(config, "quant_method", "quantized layers"))


def _register(register, cls) -> None:
    """Registers `cls` under GLM's quant method unless a class already is: this file is imported again, under
    another module name, as the code of every saved folder loaded with `trust_remote_code=True`."""
    try:
        register(QUANT_METHOD)(cls)
    except ValueError:  # the only error registering raises for a subclass of the right base: the name is taken
        pass


_register(register_quantization_config, GLMQuantizationConfig)
_register(register_quantizer, GLMQuantizer)


__all__ = [
    "GLMQuantizationConfig",
    "GLMQuantizer",
    "QuantizationSpec",
    "QuantizedLinear",
    "QuantizedWeight",
    "dequantize_weight",
    "pack_int4",
    "quantize",
    "quantize_linears",
    "quantize_weight",
    "refuse_ignored_quantization",
    "unpack_int4",
]
