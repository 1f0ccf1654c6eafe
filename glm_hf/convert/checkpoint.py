"""Import THUDM GLM and ChatGLM-6B checkpoints into glm-hf folders, one weight shard at a time.

Two source formats, told apart by their `config.json`:
- THUDM GLM (`model_type="glm"`, hub repos THUDM/glm-large, glm-roberta-large, glm-large-chinese, glm-515m, glm-2b,
  glm-10b, glm-10b-chinese): learned position and block-position tables of `max_sequence_length + 1` rows, pre-LN,
  query/key/value rows laid out `[Q of all heads | K | V]`, exact-erf GeLU (the HF remote code's `gelu`), output
  layer tied to the word embeddings. State-dict keys come with or without the `glm.` prefix.
- ChatGLM-6B (`model_type="chatglm"`): 2D rotary positions with float16-rounded frequencies, post-LN residuals
  scaled by `sqrt(56)` (fixed in THUDM's code whatever the depth), tanh GeLU, a separate `lm_head`, and
  query/key/value rows already per head (`[q_h, k_h, v_h]` for each head h), as glm-hf stores them.

Weights are read with `safetensors` or `torch.load(weights_only=True, mmap=True)`; a pickle that needs arbitrary
code is refused. The output is written to a temporary folder next to the destination and moved into place only
when complete.
"""

import json
import math
import os
import pickle
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..chat_templates import chatglm_chat_template, glm_chat_template
from ..folder_writes import FolderWriteError, check_destination, staged_folder
from ..model.configuration_glm import GLMConfig
from ..model.hub_glm import thudm_kind
from ..model.tokenization_glm import GLMTokenizer
from ..model_card import DEFAULT_LIMITATIONS, CardInfo, write_model_card
from .vocab import chatglm_tokenizer, load_thudm_vocabulary

CONFIG_FILE = "config.json"
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")
CHATGLM_ALPHA = math.sqrt(2 * 28)  # THUDM's ChatGLM-6B GLMBlock is built with its default num_layers=28
# The blank and span ids a THUDM GLM config takes from its tokenizer (vocabularies without task masks, BERT and
# RoBERTa, give [MASK]'s id for sMASK and gMASK: looking the absent strings up would give the unknown token's).
THUDM_TOKEN_IDS = ("mask_token_id", "smask_token_id", "gmask_token_id", "sop_token_id", "eop_token_id")


class CheckpointError(ValueError):
    """A source checkpoint that cannot be converted; the message names the file or key and what to do."""


def source_format(folder: str | os.PathLike) -> str:
    """`"thudm_glm"`, `"chatglm"` or `"glm_hf"` for a checkpoint folder, from its `config.json`."""
    config = read_config(folder)
    model_type = config.get("model_type")
    if model_type == GLMConfig.model_type:
        return "glm_hf"
    kind = thudm_kind(config)
    if kind is not None:
        return kind
    raise CheckpointError(
        f"{Path(folder) / CONFIG_FILE}: model_type={model_type!r} is not a THUDM GLM ('glm' with "
        "block_position_encoding), ChatGLM-6B ('chatglm') or glm-hf ('glm_hf') checkpoint."
    )


def read_config(folder: str | os.PathLike) -> dict:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: a checkpoint folder needs its config.json.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}") from error


def thudm_glm_config(source: dict, tokenizer: GLMTokenizer) -> GLMConfig:
    """Our config for a THUDM GLM `config.json`; the special token ids come from its tokenizer."""
    _require(source, ("num_layers", "vocab_size", "hidden_size", "num_attention_heads", "max_sequence_length"))
    if not source.get("block_position_encoding", True) or source.get("relative_encoding", False):
        raise CheckpointError(
            "config.json: only block_position_encoding=true, relative_encoding=false GLM checkpoints (all released "
            "THUDM GLM models) can be converted."
        )
    if source.get("spell_length"):
        raise CheckpointError("config.json: P-tuning prompt encoders (spell_length) are not supported.")
    ids = {name: getattr(tokenizer, name) for name in THUDM_TOKEN_IDS}
    return GLMConfig(
        vocab_size=source["vocab_size"],
        hidden_size=source["hidden_size"],
        num_hidden_layers=source["num_layers"],
        num_attention_heads=source["num_attention_heads"],
        max_position_embeddings=source["max_sequence_length"] + 1,
        hidden_act="gelu",
        position_encoding="learned_2d",
        layernorm_style="pre",
        attention_scale=source.get("attention_scale", 1.0),
        hidden_dropout=source.get("output_dropout_prob", 0.1),
        attention_dropout=source.get("attention_dropout_prob", 0.1),
        layer_norm_eps=1e-5,
        initializer_range=source.get("initializer_range", 0.02),
        tie_word_embeddings=True,
        qkv_bias=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **ids,
    )


def chatglm_config(source: dict) -> GLMConfig:
    """Our config for a ChatGLM-6B `config.json` (v1.1 ids 130000.., or the first release's 150000..)."""
    _require(source, ("num_layers", "vocab_size", "hidden_size", "num_attention_heads", "mask_token_id"))
    if not source.get("position_encoding_2d", True):
        raise CheckpointError("config.json: only position_encoding_2d=true ChatGLM checkpoints can be converted.")
    if source.get("pre_seq_len") or source.get("quantization_bit"):
        raise CheckpointError(
            "config.json: P-tuning (pre_seq_len) and THUDM-quantized (quantization_bit) ChatGLM checkpoints are not "
            "supported; convert the full-precision base model and quantize with glm-hf instead."
        )
    mask = source["mask_token_id"]
    return GLMConfig(
        vocab_size=source["vocab_size"],
        hidden_size=source["hidden_size"],
        num_hidden_layers=source["num_layers"],
        num_attention_heads=source["num_attention_heads"],
        intermediate_size=source.get("inner_hidden_size", 4 * source["hidden_size"]),
        max_position_embeddings=source.get("max_sequence_length", 2048),
        hidden_act="gelu_pytorch_tanh",
        position_encoding="rotary_2d",
        rope_theta=10000.0,
        rope_fp16_frequencies=True,
        layernorm_style="post_alpha",
        post_ln_alpha=CHATGLM_ALPHA,
        attention_softmax_in_fp32=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        layer_norm_eps=source.get("layernorm_epsilon", 1e-5),
        tie_word_embeddings=False,
        qkv_bias=True,
        pad_token_id=source.get("pad_token_id", 3),
        eos_token_id=source.get("eos_token_id", mask + 5),
        mask_token_id=mask,
        gmask_token_id=source.get("gmask_token_id", mask + 1),
        smask_token_id=mask + 2,  # ChatGLM's vocabulary: [MASK], [gMASK], [sMASK], <unused_0>, <sop>, <eop>
        sop_token_id=source.get("bos_token_id", mask + 4),
        eop_token_id=source.get("eos_token_id", mask + 5),
        blank_fill_order="gmask_first",
    )


def _require(source: dict, keys: tuple[str, ...]) -> None:
    missing = [key for key in keys if key not in source]
    if missing:
        raise CheckpointError(f"config.json lacks {missing}; is this a complete THUDM checkpoint?")


def source_tokenizer(folder: Path, kind: str) -> GLMTokenizer | None:
    """The checkpoint's tokenizer imported with `convert.vocab`, with its family's chat template (ChatGLM's
    conversation format, or GLM's question/answer one), or None when the folder has no vocabulary."""
    if kind == "chatglm":
        model_file = folder / "ice_text.model"
        if not model_file.is_file():
            return None
        options_file = folder / "tokenizer_config.json"
        options = json.loads(options_file.read_text(encoding="utf-8")) if options_file.is_file() else {}
        tokenizer = chatglm_tokenizer(str(model_file), num_image_tokens=options.get("num_image_tokens", 20000))
        tokenizer.chat_template = chatglm_chat_template()
        return tokenizer
    try:
        tokenizer = load_thudm_vocabulary(str(folder))
    except FileNotFoundError:
        return None
    tokenizer.chat_template = glm_chat_template(tokenizer)
    return tokenizer


def weight_files(folder: Path) -> list[Path]:
    """The checkpoint's weight files in shard order (from the index when sharded)."""
    for name in INDEX_FILES:
        index = folder / name
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
            files = sorted(set(weight_map.values()))
            missing = [file for file in files if not (folder / file).is_file()]
            if missing:
                raise CheckpointError(f"{index} lists shards that are not in the folder: {missing}")
            return [folder / file for file in files]
    for name in SINGLE_FILES:
        if (folder / name).is_file():
            return [folder / name]
    raise CheckpointError(
        f"{folder}: no weights found; expected one of {SINGLE_FILES + INDEX_FILES} (sharded checkpoints need their "
        "index file)."
    )


def read_shard(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(key, tensor) pairs of one weight file, loaded lazily where the format allows."""
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():
                    yield key, handle.get_tensor(key)
        except SafetensorError as error:
            raise CheckpointError(f"{path}: unreadable safetensors file ({error}); is it truncated?") from error
        return
    try:
        # Memory-map zip-format files (torch >= 1.6) so a shard is paged in as it is converted; legacy ones load whole.
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path} needs arbitrary code to unpickle, which glm-hf refuses to run (torch.load weights_only=True). "
            f"Re-save its state dict as safetensors with the code that wrote it. Detail: {error}"
        ) from error
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(f"{path}: unreadable PyTorch file ({error}); is it truncated?") from error
    if isinstance(state, dict) and "module" in state and isinstance(state["module"], dict):
        state = state["module"]  # a raw Megatron/DeepSpeed checkpoint
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict (found {type(state).__name__}).")
    yield from state.items()


def glm_key(key: str) -> str | None:
    """Our parameter name for a THUDM GLM key (with or without the `glm.` prefix); None if not a weight of ours."""
    key = key.removeprefix("glm.")
    if key == "word_embeddings.weight":
        return "glm.word_embeddings.weight"
    if key.startswith("transformer."):
        return "glm." + key.removeprefix("transformer.")
    return None


def chatglm_key(key: str) -> str | None:
    """Our parameter name for a ChatGLM-6B key; None for the rotary frequency buffers (recomputed, as THUDM does)."""
    if key.endswith("rotary_emb.inv_freq"):
        return None
    if key == "lm_head.weight":
        return key
    if key.startswith("transformer."):
        return "glm." + key.removeprefix("transformer.")
    return None


def glm_qkv_per_head(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    """THUDM GLM's `[Q | K | V]` query/key/value rows regrouped per head as `[q_h, k_h, v_h]` (glm-hf's layout)."""
    rows = tensor.shape[0]
    grouped = tensor.reshape(3, heads, rows // (3 * heads), *tensor.shape[1:]).transpose(0, 1)
    return grouped.reshape(tensor.shape)


def expected_shapes(config: GLMConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter of `GLMForConditionalGeneration(config)` with its shape (tied output layer excluded)."""
    with torch.device("meta"):
        from ..model.modeling_glm import GLMForConditionalGeneration

        model = GLMForConditionalGeneration(config)
    shapes = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    if config.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)
    return shapes


def convert_checkpoint(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    require_tokenizer: bool = True,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Converts a THUDM GLM or ChatGLM-6B folder into a glm-hf folder (config, safetensors shards with an index,
    tokenizer, model card) and returns its path.

    One source shard is in memory at a time. `dtype` casts floating weights (default: keep the source's).
    Without a vocabulary in the source folder the conversion fails unless `require_tokenizer=False`.
    """
    source, destination = Path(source), Path(destination)
    kind = source_format(source)
    if kind == "glm_hf":
        raise CheckpointError(f"{source} is already a glm-hf checkpoint; load it with from_pretrained.")
    try:
        check_destination(destination, [source], overwrite)
    except FolderWriteError as error:
        raise CheckpointError(str(error)) from error
    tokenizer = source_tokenizer(source, kind)
    if tokenizer is None and (require_tokenizer or kind == "thudm_glm"):
        raise CheckpointError(
            f"{source} has no vocabulary file (vocab.json + merges.txt, vocab.txt, cog-pretrain.model or "
            "ice_text.model); copy it next to config.json"
            + ("" if kind == "thudm_glm" else ", or convert without a tokenizer (--no-tokenizer)")
            + "."
        )
    settings = read_config(source)
    if tokenizer is not None and len(tokenizer) > settings.get("vocab_size", 0):
        raise CheckpointError(
            f"the tokenizer in {source} has {len(tokenizer)} tokens but config.json vocab_size is "
            f"{settings.get('vocab_size')}: they do not belong together."
        )
    config = thudm_glm_config(settings, tokenizer) if kind == "thudm_glm" else chatglm_config(settings)
    if tokenizer is not None:
        _check_special_ids(config, tokenizer, source)
    if dtype is not None:
        config.dtype = dtype
    with staged_folder(destination, [source], overwrite) as staging:
        _write_weights(source, staging, kind, config, dtype, progress)
        config.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        write_model_card(
            staging, _card_info(source, kind), sum(math.prod(s) for s in expected_shapes(config).values())
        )
    return destination


def _check_special_ids(config: GLMConfig, tokenizer: GLMTokenizer, source: Path) -> None:
    """The blank and span token ids of config.json must be the vocabulary's (ChatGLM states them in both)."""
    names = ("mask", "gmask", "sop", "eop")
    disagree = {
        name: (getattr(config, f"{name}_token_id"), getattr(tokenizer, f"{name}_token_id"))
        for name in names
        if getattr(config, f"{name}_token_id") != getattr(tokenizer, f"{name}_token_id")
    }
    if disagree:
        raise CheckpointError(
            f"config.json and the vocabulary in {source} disagree on special token ids (config, vocabulary): "
            f"{disagree}; they do not belong together (e.g. a v1.1 vocabulary with a first-release config)."
        )


def _write_weights(
    source: Path,
    staging: Path,
    kind: str,
    config: GLMConfig,
    dtype: torch.dtype | None,
    progress: Callable[[str], None] | None,
) -> None:
    """Maps, checks and writes every source shard as one of our shards, then the index."""
    rename = glm_key if kind == "thudm_glm" else chatglm_key
    shapes = expected_shapes(config)
    files = weight_files(source)
    weight_map: dict[str, str] = {}
    total_size = 0
    for number, path in enumerate(files, start=1):
        if progress is not None:
            progress(f"converting {path.name} ({number}/{len(files)})")
        shard: dict[str, torch.Tensor] = {}
        for key, tensor in read_shard(path):
            name = rename(key)
            if name is None:
                if key.endswith("rotary_emb.inv_freq"):
                    continue
                raise CheckpointError(f"{path}: unexpected key {key!r} for a {kind} checkpoint.")
            if name in weight_map or name in shard:
                raise CheckpointError(f"{path}: {key!r} appears twice in the checkpoint.")
            if kind == "thudm_glm" and ".attention.query_key_value." in name:
                tensor = glm_qkv_per_head(tensor, config.num_attention_heads)
            if name not in shapes:
                raise CheckpointError(f"{path}: {key!r} has no counterpart in the glm-hf model ({name}).")
            if tuple(tensor.shape) != shapes[name]:
                raise CheckpointError(
                    f"{path}: {key!r} has shape {tuple(tensor.shape)}, but config.json implies {shapes[name]}."
                )
            if dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(dtype)
            shard[name] = tensor.contiguous()
        file_name = f"model-{number:05d}-of-{len(files):05d}.safetensors"
        save_file(shard, str(staging / file_name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, file_name))
        total_size += sum(t.numel() * t.element_size() for t in shard.values())
        del shard
    missing = sorted(set(shapes) - set(weight_map))
    if missing:
        raise CheckpointError(f"{source}: the checkpoint lacks {len(missing)} weights, e.g. {missing[:5]}.")
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    (staging / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")


def _card_info(source: Path, kind: str) -> CardInfo:
    family = "THUDM GLM" if kind == "thudm_glm" else "ChatGLM-6B"
    return CardInfo(
        title=f"{source.name} (converted)",
        training=(
            f"THUDM's {family} checkpoint `{source.name}`, converted to glm-hf with `glm-hf convert`; logits match "
            "THUDM's reference implementation to 1e-5 in float32. Training as described by THUDM."
        ),
        license="other",
        base_model=source.name,
        limitations=DEFAULT_LIMITATIONS + " The weights are THUDM's, under the license of the original checkpoint.",
        example="Tsinghua University is located in [MASK]." if kind == "thudm_glm" else "你好[gMASK]",
    )


__all__ = [
    "CheckpointError",
    "chatglm_config",
    "convert_checkpoint",
    "source_format",
    "thudm_glm_config",
]
