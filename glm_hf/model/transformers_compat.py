"""The one place that knows which transformers release is installed.

glm-hf supports every transformers release from the minimum in `pyproject.toml` (5.23.0) to the newest. The model
files (`modeling_glm.py` and its siblings) travel into saved folders and run with `trust_remote_code=True` on
whatever release the loading user has, so everything that differs between releases is decided here, once, at import
time, by looking at what the installed transformers offers (never by parsing its version string):

- **The cache keyword.** Up to 5.23 `generate()` passes the KV cache as `past_key_values=` and reads it back from
  `outputs.past_key_values`; from 5.24 it passes `cache=` and reads `outputs["cache"]` only, output dataclasses
  name the field `cache`, and `GradientCheckpointingLayer` clears `kwargs["cache"]`. GLM's forwards take both
  names (`select_cache`), build outputs with the installed field name (`cache_output`) and read them back with
  `output_cache`; inside the model the cache is always called `cache`.

Private transformers names that glm-hf still uses, each because no public equivalent exists, are imported here and
nowhere else (README's "Compatibility" section lists them):

- `transformers.utils.generic.merge_with_config_defaults`: fills `use_cache` / `output_*` from the config, as
  every built-in model's base forward does.
- `transformers.utils.output_capturing.capture_outputs`: collects hidden states and attentions through
  `_can_record_outputs`, as built-in models do.
- `transformers.quantizers.quantizers_utils.get_module_from_name` / `should_convert_module`: how transformers'
  own quantizers resolve a parameter name and match `modules_to_not_convert`, so GLM's quantizer matches alike.
- `transformers.distributed.tensor_parallel.ALL_PARALLEL_STYLES` / `PackedColwiseParallel`: the registry a
  tensor-parallel style must join for `tp_plan="auto"`, and the base of GLM's GeGLU style (`GLUColwiseParallel`,
  defined here because its `shard_param` signature follows the release: 5.25 passes `config=` and
  `mesh_manager=` keywords that 5.23 and 5.24 do not).
- `transformers.convert_slow_tokenizer.SentencePieceExtractor` (converter only, never in saved folders): reads a
  SentencePiece model's vocabulary and merges.
- Cache layers' `is_initialized` (in 5.23 and 5.24 alike; `cache_may_hold_tokens`): tells a decode step from
  fresh input without reading a static cache's device-side length.
- `GenerationMixin._prepare_position_ids_for_generation` is overridden, not imported: the seq2seq head returns None
  there, since GLM's 2D positions travel as `prompt_position_ids` instead of transformers' position bookkeeping.
"""

import dataclasses
import warnings

import torch
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.quantizers.quantizers_utils import get_module_from_name, should_convert_module
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

# Name of the cache field in the installed release's outputs and of the keyword generate() passes it under.
CACHE_FIELD = (
    "cache" if "cache" in {field.name for field in dataclasses.fields(CausalLMOutputWithPast)} else ("past_key_values")
)


def select_cache(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    """The cache a forward was given, under its 5.24 name `cache` or its 5.23 name `past_key_values`; the old name
    gets transformers' deprecation warning where the installed release has renamed it (as its built-in models do)."""
    if cache is not None and past_key_values is not None:
        raise ValueError("Pass the KV cache once, as `cache` (or its older name `past_key_values`), not as both.")
    if past_key_values is not None and CACHE_FIELD == "cache":
        warnings.warn("`past_key_values` is deprecated: pass the KV cache as `cache`.", FutureWarning, stacklevel=3)
    return cache if cache is not None else past_key_values


def cache_may_hold_tokens(cache: Cache | None) -> bool:
    """Whether a cache may already hold tokens, decided from its Python state alone (a static cache counts its
    tokens in a device tensor, which is never read here). A reset static cache may answer True while empty; callers
    use the answer only to skip host-side input checks on what are then decode steps."""
    if cache is None or not cache.layers or not cache.layers[0].is_initialized:
        return False
    length = cache.get_seq_length()
    return isinstance(length, torch.Tensor) or length > 0


def cache_output(cache: Cache | None) -> dict[str, Cache | None]:
    """The keyword argument that puts `cache` into an output dataclass of the installed release."""
    return {CACHE_FIELD: cache}


def output_cache(outputs) -> Cache | None:
    """The cache held by a model output, whichever release built it."""
    return outputs.get(CACHE_FIELD)


# Tensor-parallel style of the GeGLU up-projection (`from_pretrained(..., tp_plan="auto")` with `use_glu=True`).
TP_STYLE_GLU_UP = "glm_glu_colwise"

if torch.distributed.is_available():
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.tensor import distribute_tensor
    from torch.distributed.tensor.placement_types import _StridedShard
    from transformers.distributed.tensor_parallel import ALL_PARALLEL_STYLES, PackedColwiseParallel

    class GLUColwiseParallel(PackedColwiseParallel):
        """Column-parallel style for the GeGLU up-projection, whose output is two halves `[value | gate]`.

        A plain column split would give rank 0 only values and rank 1 only gates. Here every rank holds the same
        slice of both halves, weight and bias alike, so its local output is `[value_r | gate_r]`, `GLMMLP.forward`'s
        `chunk(2)` pairs each value with its own gate, and the row-parallel down-projection gets slice r of the
        intermediate features. transformers' `packed_colwise` shards the weight this way but splits a 1-D bias
        contiguously, which is wrong for a packed bias; hence this style.
        """

        def shard_param(self, module: torch.nn.Module, param: str, mesh: DeviceMesh, **release_keywords) -> None:
            """Shards `module.<param>` in place. `release_keywords` takes what newer releases pass besides
            (5.25: `config=`, `mesh_manager=`); the split depends on neither."""
            meta = module._parameters.get(param)
            if meta is None:
                return
            both_halves = _StridedShard(dim=0, split_factor=2)
            module._parameters[param] = torch.nn.Parameter(
                distribute_tensor(meta, mesh, [both_halves], src_data_rank=None), requires_grad=meta.requires_grad
            )

    ALL_PARALLEL_STYLES.register(TP_STYLE_GLU_UP, GLUColwiseParallel())


def sentencepiece_extractor(model_file: str):
    """transformers' reader of a SentencePiece model file (`.extract(model_type)` gives its vocab and merges)."""
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    return SentencePieceExtractor(model_file)


__all__ = [
    "TP_STYLE_GLU_UP",
    "get_module_from_name",
    "sentencepiece_extractor",
    "should_convert_module",
    "CACHE_FIELD",
    "cache_may_hold_tokens",
    "cache_output",
    "capture_outputs",
    "merge_with_config_defaults",
    "output_cache",
    "select_cache",
]
