"""Linear layers whose weights oneDNN has reordered once, for fast inference on CPU.

On CPU, `nn.Linear` runs MKL's GEMM. At decode batch sizes (a few rows per step) it reads the weights well below
the memory bandwidth on more than one core: on the project's 2-core machine, a matrix-vector sweep over a
glm-large-sized model's weights reaches 17-18 GB/s through `F.linear` and 27-31 GB/s (median of sweeps) through
oneDNN with weights reordered into its blocked layout (`benchmarks/bench_decode.py`). `pack_for_cpu`
reorders every float32 `nn.Linear` (and transformers' `Conv1D`, GPT-2's linear layer) of a model once, in place,
so that `generate()`, pipelines and `glm-hf serve` decode at that speed, eager or under `torch.compile`.

The packed model is for inference: its state dict still holds plain `weight` tensors (so `save_pretrained` and
`load_state_dict` work as before), but it cannot train, change dtype or leave the CPU; reload the model for that.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

__all__ = ["PackedLinear", "pack_for_cpu"]

# oneDNN picks the blocked layout for this many rows. Measured on the 2-core AVX2 machine over a glm-large-sized
# model's weights (`benchmarks/bench_decode.py`): the layout for 1 row runs 1 row at 19 GB/s and 8 rows at 14 GB/s,
# the layout for 8 rows runs 1 row at 27 GB/s and 8 rows at 25 GB/s; 4 to 32 rows all land within noise of 8.
DEFAULT_BATCH_SIZE = 8


@torch.library.custom_op("glm_hf::packed_linear", mutates_args=())
def _packed_linear_op(
    x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor | None, out_features: int
) -> torch.Tensor:
    """oneDNN's linear on a packed weight, as an opaque op for `torch.compile` (inductor has no lowering for a
    packed weight it did not pack itself)."""
    return torch.ops.mkldnn._linear_pointwise(x, packed_weight, bias, "none", [], "")


@_packed_linear_op.register_fake
def _(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor | None, out_features: int) -> torch.Tensor:
    return x.new_empty(x.shape[0], out_features)


class PackedLinear(nn.Module):
    """`y = x W^T + b` with W held in oneDNN's blocked layout (an opaque tensor, not a parameter).

    `batch_size` is the number of rows the reorder is tuned for (`pack_for_cpu` explains the default of 8); any number
    of rows gives the same result.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, batch_size: int = DEFAULT_BATCH_SIZE):
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.batch_size = batch_size
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), batch_size)
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        self.eval()

    @classmethod
    def from_module(cls, module: nn.Linear | Conv1D, batch_size: int = DEFAULT_BATCH_SIZE) -> PackedLinear:
        """The packed form of an `nn.Linear` (weight out x in) or a `Conv1D` (weight in x out)."""
        weight = module.weight.t().contiguous() if isinstance(module, Conv1D) else module.weight
        return cls(weight, module.bias, batch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError(
                "This layer was packed for inference by glm_hf.pack_for_cpu and cannot train; "
                "reload the model (from_pretrained) to fine-tune it."
            )
        rows = x.reshape(-1, self.in_features)
        if torch.compiler.is_compiling():
            out = _packed_linear_op(rows, self.packed_weight, self.bias, self.out_features)
        else:
            out = torch.ops.mkldnn._linear_pointwise(rows, self.packed_weight, self.bias, "none", [], "")
        return out.view(*x.shape[:-1], self.out_features)

    def dense_weight(self) -> torch.Tensor:
        """The weight in nn.Linear's plain (out x in) layout, bit-exact."""
        return self.packed_weight.to_dense()

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        destination[prefix + "weight"] = self.dense_weight()
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        shapes = {"weight": (self.out_features, self.in_features)}
        if self.bias is not None:
            shapes["bias"] = (self.out_features,)
        for name, shape in shapes.items():
            value = state_dict.get(prefix + name)
            if value is None:
                missing_keys.append(prefix + name)
            elif tuple(value.shape) != shape:
                error_msgs.append(
                    f"size mismatch for {prefix}{name}: copying a param with shape {tuple(value.shape)}, "
                    f"the packed layer has shape {shape}."
                )
            elif name == "weight":
                self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(
                    value.detach().to(torch.float32), self.batch_size
                )
            else:
                with torch.no_grad():
                    self.bias.copy_(value)
        if strict:
            unexpected_keys.extend(
                key for key in state_dict if key.startswith(prefix) and key[len(prefix) :] not in shapes
            )

    def _apply(self, fn, recurse: bool = True):
        probe = fn(torch.zeros(1))
        if probe.dtype != torch.float32 or probe.device.type != "cpu":
            raise RuntimeError(
                f"This layer was packed for float32 inference on CPU by glm_hf.pack_for_cpu; it cannot move to "
                f"{probe.device} / {probe.dtype}. Layers before it may have moved: reload the model "
                "(from_pretrained) for another device or dtype."
            )
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"packed for {self.batch_size} row(s)"
        )


def _packable(module: nn.Module) -> bool:
    return type(module) is nn.Linear or type(module) is Conv1D


def pack_for_cpu(model: nn.Module, batch_size: int = DEFAULT_BATCH_SIZE) -> nn.Module:
    """Replaces, in place, every `nn.Linear` and transformers `Conv1D` of `model` by a `PackedLinear`, puts the
    model in eval mode and returns it.

    `batch_size` is the number of rows per step the reorder is tuned for; other row counts (prefill, other
    batches) give the same results. The default, 8, is also the fastest layout for batch-1 decoding measured here:
    oneDNN's layout for a single row reads the weights about 30% slower even at one row, and half as fast at 8.

    Layers of other types (quantized layers, LoRA wrappers) are left as they are. Weights tied to an embedding
    (GLM's output layer) keep their dense tensor for the embedding, so the model holds that matrix twice (vocab x
    hidden x 4 bytes more).

    Raises:
        RuntimeError: torch was built without oneDNN (mkldnn).
        ValueError: a linear layer's weight is not float32 on CPU, naming the layer.
    """
    if not torch.backends.mkldnn.is_available():
        raise RuntimeError("pack_for_cpu needs torch built with oneDNN (torch.backends.mkldnn.is_available()).")
    targets = [(name, module) for name, module in model.named_modules() if _packable(module)]
    for name, module in targets:
        weight = module.weight
        if weight.device.type != "cpu" or weight.dtype != torch.float32:
            raise ValueError(
                f"pack_for_cpu packs float32 weights on CPU; layer {name!r} has a {weight.dtype} weight on "
                f"{weight.device}. Load the model with dtype=torch.float32 on CPU."
            )
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        model.get_submodule(parent_name).register_module(child, PackedLinear.from_module(module, batch_size))
    return model.eval()
