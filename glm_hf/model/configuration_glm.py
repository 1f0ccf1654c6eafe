"""GLM configuration: one config class for GLM (2021), GLM-130B-style and ChatGLM-6B-style models."""

from typing import ClassVar

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

POSITION_ENCODINGS = ("learned_2d", "rotary_2d")
LAYERNORM_STYLES = ("pre", "deepnorm", "post_alpha")
CHOICE_SCORINGS = ("mean", "sum")
BLANK_FILL_ORDERS = ("in_order", "gmask_first")

# Where GLMTokenizer puts its special tokens; the config defaults follow it so that a model built
# from `GLMConfig()` and a default tokenizer agree without extra arguments.
DEFAULT_SPECIAL_TOKEN_IDS = {
    "pad_token_id": 0,
    "unk_token_id": 1,
    "cls_token_id": 2,
    "eos_token_id": 3,
    "mask_token_id": 4,
    "smask_token_id": 5,
    "gmask_token_id": 6,
    "sop_token_id": 7,
    "eop_token_id": 8,
}


# `strict` checks every field against its annotation when it is set (at construction, in `from_dict`, and on later
# assignment), as transformers' own configs do: `GLMConfig(hidden_size="64")` names the field, the value and the
# expected type, instead of failing later inside a comparison. A bool is not accepted for an int, nor a float for an
# int; the float fields are annotated `float | int` so that `rope_theta=10000` or a JSON `0` dropout still loads.
@strict
class GLMConfig(PreTrainedConfig):
    r"""
    Configuration of a GLM model (Du et al., 2022, "GLM: General Language Model Pretraining with Autoregressive
    Blank Infilling") and of its GLM-130B / ChatGLM-6B descendants.

    Sizes:
        vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size (defaults to
        4 * hidden_size), max_position_embeddings (rows of each position table; also the longest Part A and the
        longest span for rotary models).

    Architecture switches (the family's variants are combinations of these):
        position_encoding: `"learned_2d"` adds a position table and a block-position table to the token
            embedding (GLM); `"rotary_2d"` rotates the first half of each head by the position and the second half
            by the block position (GLM-130B, ChatGLM-6B). `rope_theta` is the rotary base;
            `rope_fp16_frequencies` rounds the rotary frequencies to float16 as ChatGLM-6B's code does (its
            checkpoints were trained with them, so converted ChatGLM models set it).
        layernorm_style: `"pre"` is pre-LN with a final LayerNorm (GLM). `"deepnorm"` is GLM-130B's DeepNorm:
            each sub-layer returns `alpha * LN(x) + f(LN(x))` with `alpha = sqrt(2 * num_hidden_layers)`, and the
            value, output and MLP weights get Xavier-normal init with gain `(2 * num_hidden_layers) ** -0.5`.
            `"post_alpha"` is ChatGLM-6B's form: the same forward, with the plain normal init. `post_ln_alpha`
            overrides alpha (ChatGLM-6B's code fixes it at `sqrt(56)` whatever the depth; converted checkpoints
            store it).
        use_glu: GeGLU feed-forward (`x1 * act(x2)` over the two halves of the up-projection) instead of `act(x)`.
        hidden_act: the activation (GLM and ChatGLM use the tanh approximation of GeLU).
        embedding_grad_shrink: GLM-130B's embedding gradient shrink; the embedding's gradient is multiplied by
            this factor while its forward value is unchanged (1.0 = off, GLM-130B used 0.1).
        attention_softmax_in_fp32: compute the eager attention softmax in float32 (fp16/bf16 safety).
        attention_scale: THUDM's overflow guard for fp16; scores are computed divided by this factor and rescaled
            after subtracting the row maximum. Mathematically a no-op; only the eager path uses it.
        qkv_bias: bias in the fused query/key/value projection.
        tie_word_embeddings: the output layer shares the word embedding matrix (GLM, GLM-130B) or is separate
            (ChatGLM-6B).

    Cloze NLU (`GLMForMultipleChoice`, `GLMForSequenceClassification`):
        choice_scoring: how a choice's token log-probabilities combine into its score: `"mean"` (length-normalised,
            the default) or `"sum"` (THUDM's multiple-choice scoring).
        verbalizer_ids: for sequence classification, the token ids of each label's verbalizer (label i is scored
            by generating `verbalizer_ids[i]` into the blank); cloze_prefix_ids / cloze_suffix_ids: the pattern
            around every text (unless `forward(..., plain_text=False)`), e.g. the ids of " It was [MASK]." as the
            suffix. Set them with `glm_hf.training.cloze.cloze_config(tokenizer, pattern, label_words)`.

    Generation:
        blank_fill_order: which blank a span fills when the layout is derived from the tokens (`generate()`, and
            forwards without `position_ids`). `"in_order"` (GLM): the k-th span fills the k-th blank.
            `"gmask_first"` (ChatGLM-6B's rule, `get_position_ids` in THUDM's `modeling_chatglm.py`): spans fill the
            `[gMASK]` blanks first, so in a prompt holding both `[MASK]` and `[gMASK]` the generated text belongs to
            `[gMASK]`. Converted ChatGLM checkpoints set it.

    Special tokens (ids in the vocabulary): pad, eos, mask (`[MASK]`), smask (`[sMASK]`), gmask (`[gMASK]`),
    sop (`<|startofpiece|>`, starts each Part B span) and eop (`<|endofpiece|>`, ends it; generation stops there).
    """

    model_type = "glm_hf"
    # Output keys Trainer leaves out of gathered logits: the KV cache, under its names before and since 5.24.
    keys_to_ignore_at_inference: ClassVar[list[str]] = ["cache", "past_key_values"]
    # Tensor parallelism (`from_pretrained(..., tp_plan="auto")`): Megatron-style, one all-reduce per sub-layer. The
    # fused query/key/value rows are laid out per head, so a contiguous column split gives each rank whole heads
    # (num_attention_heads must divide by the TP size). The word embedding is split by vocabulary rows, matching the
    # heads' column-split (and possibly tied) LM head; position tables and LayerNorms stay replicated. With use_glu,
    # `GLMModel.init_parallel_plans` swaps the up-projection's style for one that splits its [value | gate] halves
    # alike (`modeling_glm.GLUColwiseParallel`): a plain column split would separate values from their gates.
    base_model_tp_plan: ClassVar[dict[str, str]] = {
        "word_embeddings": "embedding_rowwise",
        "layers.*.attention.query_key_value": "colwise",
        "layers.*.attention.dense": "rowwise",
        "layers.*.mlp.dense_h_to_4h": "colwise",
        "layers.*.mlp.dense_4h_to_h": "rowwise",
    }
    # Pipeline parallelism: what each top-level piece of `GLMModel` takes and returns, in `GLMModel.forward`'s names.
    # Every layer needs the hidden states, the boolean "may attend" mask and the rotary (cos, sin) tables (None for
    # learned 2D positions, which the embedding stage adds), so a stage boundary carries the hidden states plus the
    # compact inputs those two are rebuilt from: the Part A lengths and the 2D position ids (see
    # examples/distributed/pipeline_parallel.py).
    base_model_pp_plan: ClassVar[dict[str, tuple[list[str], list[str]]]] = {
        "word_embeddings": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask", "rotary"], ["hidden_states"]),
        "final_layernorm": (["hidden_states"], ["hidden_states"]),
    }

    vocab_size: int = 50304
    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int | None = None
    max_position_embeddings: int = 1025
    hidden_act: str = "gelu_pytorch_tanh"
    position_encoding: str = "learned_2d"
    rope_theta: float | int = 10000.0
    rope_fp16_frequencies: bool = False
    layernorm_style: str = "pre"
    post_ln_alpha: float | int | None = None
    use_glu: bool = False
    embedding_grad_shrink: float | int = 1.0
    attention_softmax_in_fp32: bool = True
    attention_scale: float | int = 1.0
    qkv_bias: bool = True
    hidden_dropout: float | int = 0.1
    attention_dropout: float | int = 0.1
    layer_norm_eps: float | int = 1e-5
    initializer_range: float | int = 0.02
    tie_word_embeddings: bool = True
    use_cache: bool = True
    choice_scoring: str = "mean"
    verbalizer_ids: list[list[int]] | None = None
    cloze_prefix_ids: list[int] | None = None
    cloze_suffix_ids: list[int] | None = None
    blank_fill_order: str = "in_order"
    bos_token_id: int | None = None  # GLM's text has no beginning-of-sequence token; declared for generic tools
    pad_token_id: int | None = DEFAULT_SPECIAL_TOKEN_IDS["pad_token_id"]
    eos_token_id: int | None = DEFAULT_SPECIAL_TOKEN_IDS["eos_token_id"]
    mask_token_id: int | None = DEFAULT_SPECIAL_TOKEN_IDS["mask_token_id"]
    smask_token_id: int | None = DEFAULT_SPECIAL_TOKEN_IDS["smask_token_id"]
    gmask_token_id: int | None = DEFAULT_SPECIAL_TOKEN_IDS["gmask_token_id"]
    sop_token_id: int | None = DEFAULT_SPECIAL_TOKEN_IDS["sop_token_id"]
    eop_token_id: int | None = DEFAULT_SPECIAL_TOKEN_IDS["eop_token_id"]

    def __post_init__(self, **kwargs):
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        super().__post_init__(**kwargs)
        self._check_values()

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def blank_token_ids(self) -> list[int]:
        """Ids of the three blank tokens that `generate()` and the layout builders look for."""
        return [i for i in (self.mask_token_id, self.smask_token_id, self.gmask_token_id) if i is not None]

    @property
    def first_filled_token_id(self) -> int | None:
        """The blank that spans fill before the others (`blank_fill_order`), or None for plain left-to-right order."""
        return self.gmask_token_id if self.blank_fill_order == "gmask_first" else None

    @property
    def residual_alpha(self) -> float:
        """Residual scale of the post-LN styles (DeepNorm, ChatGLM); 1.0 for pre-LN."""
        if self.layernorm_style == "pre":
            return 1.0
        return self.post_ln_alpha if self.post_ln_alpha is not None else (2.0 * self.num_hidden_layers) ** 0.5

    def _check_values(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"GLMConfig.{name} must be a positive integer, got {getattr(self, name)}.")
        if self.max_position_embeddings < 2:
            raise ValueError(
                f"GLMConfig.max_position_embeddings must be at least 2 (one Part A token and one span token), "
                f"got {self.max_position_embeddings}."
            )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"GLMConfig.hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads}); pick sizes with hidden_size = heads * head_dim."
            )
        if self.position_encoding not in POSITION_ENCODINGS:
            raise ValueError(
                f"GLMConfig.position_encoding must be one of {POSITION_ENCODINGS}, got {self.position_encoding!r}."
            )
        if self.position_encoding == "rotary_2d" and self.head_dim % 4 != 0:
            raise ValueError(
                f"position_encoding='rotary_2d' splits each head in two rotary halves, so head_dim "
                f"(hidden_size / num_attention_heads = {self.head_dim}) must be divisible by 4."
            )
        if self.layernorm_style not in LAYERNORM_STYLES:
            raise ValueError(
                f"GLMConfig.layernorm_style must be one of {LAYERNORM_STYLES}, got {self.layernorm_style!r}."
            )
        if not 0.0 < self.embedding_grad_shrink <= 1.0:
            raise ValueError(
                f"GLMConfig.embedding_grad_shrink must be in (0, 1] (1.0 = off), got {self.embedding_grad_shrink}."
            )
        if self.post_ln_alpha is not None and self.post_ln_alpha <= 0:
            raise ValueError(
                f"GLMConfig.post_ln_alpha must be positive (or None for sqrt(2N)), got {self.post_ln_alpha}."
            )
        if self.choice_scoring not in CHOICE_SCORINGS:
            raise ValueError(f"GLMConfig.choice_scoring must be in {CHOICE_SCORINGS}, got {self.choice_scoring!r}.")
        if self.verbalizer_ids is not None and (
            not self.verbalizer_ids or any(not ids for ids in self.verbalizer_ids)
        ):
            raise ValueError("GLMConfig.verbalizer_ids needs a non-empty token id list for every label.")
        if self.blank_fill_order not in BLANK_FILL_ORDERS:
            raise ValueError(
                f"GLMConfig.blank_fill_order must be one of {BLANK_FILL_ORDERS}, got {self.blank_fill_order!r}."
            )
        if self.attention_scale < 1.0:
            raise ValueError(f"GLMConfig.attention_scale must be >= 1.0, got {self.attention_scale}.")
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"GLMConfig.{name} must be in [0, 1), got {getattr(self, name)}.")
        for name in DEFAULT_SPECIAL_TOKEN_IDS:
            value = getattr(self, name, None)
            if isinstance(value, int) and not 0 <= value < self.vocab_size:
                raise ValueError(
                    f"GLMConfig.{name}={value} is outside the vocabulary (vocab_size={self.vocab_size}); "
                    f"set it from your tokenizer or enlarge vocab_size."
                )


GLMConfig.register_for_auto_class()

__all__ = ["GLMConfig", "DEFAULT_SPECIAL_TOKEN_IDS"]
