"""The architecture switches of a glm-hf `config.json`, read and checked once, so that the layers never guess."""

from dataclasses import dataclass
from typing import Any

from .layout import LayoutTokens

# The values glm-hf's `GLMConfig` allows (its `configuration_glm.py`); the plugin reads the saved config.json and must
# refuse what it does not implement rather than run it wrongly.
POSITION_ENCODINGS = ("learned_2d", "rotary_2d")
LAYERNORM_STYLES = ("pre", "deepnorm", "post_alpha")
ACTIVATIONS = ("gelu_pytorch_tanh", "gelu_new", "gelu", "relu", "silu")


@dataclass(frozen=True)
class GLMSettings:
    """What the vLLM model needs from a glm-hf config (`model_type="glm_hf"`)."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int
    position_encoding: str
    rope_theta: float
    rope_fp16_frequencies: bool
    pre_layernorm: bool
    residual_alpha: float
    use_glu: bool
    hidden_act: str
    qkv_bias: bool
    layer_norm_eps: float
    tie_word_embeddings: bool
    layout_tokens: LayoutTokens
    eop_token_id: int | None

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_hf_config(cls, config: Any) -> "GLMSettings":
        """Reads a glm-hf config (the folder's own `GLMConfig`, loaded with `trust_remote_code=True`).

        Raises ValueError naming the field when a value is one this plugin does not implement.
        """
        if getattr(config, "model_type", None) != "glm_hf":
            raise ValueError(
                f"glm_hf_vllm serves folders saved by glm-hf (config.json model_type 'glm_hf'), got "
                f"{getattr(config, 'model_type', None)!r}. Convert THUDM checkpoints first: `glm-hf convert`."
            )
        position_encoding = _choice(config, "position_encoding", POSITION_ENCODINGS)
        layernorm_style = _choice(config, "layernorm_style", LAYERNORM_STYLES)
        hidden_act = _choice(config, "hidden_act", ACTIVATIONS)
        layers = int(config.num_hidden_layers)
        alpha = getattr(config, "post_ln_alpha", None)
        residual_alpha = (
            1.0 if layernorm_style == "pre" else float(alpha if alpha is not None else (2.0 * layers) ** 0.5)
        )
        blank_ids = [getattr(config, name, None) for name in ("mask_token_id", "smask_token_id", "gmask_token_id")]
        if config.sop_token_id is None or not any(i is not None for i in blank_ids):
            raise ValueError(
                "The config needs sop_token_id and at least one blank id (mask/smask/gmask_token_id) to lay out GLM "
                "prompts; save the folder with glm-hf, whose GLMConfig sets them."
            )
        gmask_first = getattr(config, "blank_fill_order", "in_order") == "gmask_first"
        settings = cls(
            vocab_size=int(config.vocab_size),
            hidden_size=int(config.hidden_size),
            num_layers=layers,
            num_heads=int(config.num_attention_heads),
            intermediate_size=int(config.intermediate_size or 4 * config.hidden_size),
            max_positions=int(config.max_position_embeddings),
            position_encoding=position_encoding,
            rope_theta=float(getattr(config, "rope_theta", 10000.0)),
            rope_fp16_frequencies=bool(getattr(config, "rope_fp16_frequencies", False)),
            pre_layernorm=layernorm_style == "pre",
            residual_alpha=residual_alpha,
            use_glu=bool(getattr(config, "use_glu", False)),
            hidden_act=hidden_act,
            qkv_bias=bool(getattr(config, "qkv_bias", True)),
            layer_norm_eps=float(config.layer_norm_eps),
            tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", True)),
            layout_tokens=LayoutTokens(
                blank_ids=frozenset(i for i in blank_ids if i is not None),
                sop_id=int(config.sop_token_id),
                first_filled_id=config.gmask_token_id if gmask_first else None,
            ),
            eop_token_id=getattr(config, "eop_token_id", None),
        )
        if settings.hidden_size % settings.num_heads:
            raise ValueError(f"hidden_size {settings.hidden_size} is not divisible by {settings.num_heads} heads.")
        if position_encoding == "rotary_2d" and settings.head_dim % 4:
            raise ValueError(f"rotary_2d needs head_dim divisible by 4, got {settings.head_dim}.")
        return settings


def _choice(config: Any, name: str, allowed: tuple[str, ...]) -> str:
    value = getattr(config, name, None)
    if value not in allowed:
        raise ValueError(
            f"config.json has {name}={value!r}; glm_hf_vllm implements {list(allowed)}. Serve this folder with "
            "`glm-hf serve`, or open an issue with the config."
        )
    return value
