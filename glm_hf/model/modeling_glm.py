"""PyTorch GLM: autoregressive blank infilling with 2D positions (GLM, GLM-130B-style, ChatGLM-6B-style)."""

import copy
from collections.abc import Callable

import torch
from torch import nn
from transformers import GenerationMixin, GradientCheckpointingLayer, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    MultipleChoiceModelOutput,
    SequenceClassifierOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import can_return_tuple

from .blank_infilling import (
    LEFT_TO_RIGHT_PREFIX_LENGTH,
    batch_multiple_choice,
    build_attention_mask,
    build_position_ids,
    check_attention_mask_4d,
    check_padding_mask,
    check_part_a_lengths,
    generation_layout,
    left_to_right_position_ids,
    left_to_right_prefix,
    multiple_choice_layout,
    part_a_length,
    part_a_length_from_positions,
    part_a_position_ids,
    read_attention_mask_4d,
    read_padding_mask,
    span_after_part_a_position_ids,
    span_continuation,
    text_positions,
)
from .chat_glm import GLMChatMixin
from .configuration_glm import GLMConfig
from .hub_glm import GLMHubMixin
from .quantization import refuse_ignored_quantization  # importing it registers the quantizer; travels with code
from .transformers_compat import (
    TP_STYLE_GLU_UP,
    cache_may_hold_tokens,
    cache_output,
    capture_outputs,
    merge_with_config_defaults,
    output_cache,
    select_cache,
)


def check_not_empty(inputs: torch.Tensor) -> None:
    """Refuses inputs that are not a batch of rows (`[batch, seq]` ids or `[batch, seq, hidden]` embeddings) or
    that hold no token, which would otherwise fail deep inside attention."""
    if inputs.dim() < 2 or inputs.shape[0] == 0 or inputs.shape[1] == 0:
        raise ValueError(
            f"The inputs must be a non-empty batch [batch, seq] of token ids (or [batch, seq, hidden] embeddings); "
            f"got shape {list(inputs.shape)}."
        )


def padding_fits(
    padding: torch.Tensor, batch: int, seq_len: int, past_length: int | torch.Tensor, key_length: int
) -> bool:
    """Whether a 2D padding mask covers the cached and new tokens, or (static caches, whose length is a device
    tensor not read here) up to all `key_length` slots."""
    if padding.shape[0] != batch:
        return False
    if isinstance(past_length, torch.Tensor):
        return seq_len <= padding.shape[-1] <= key_length
    return padding.shape[-1] in (past_length + seq_len, key_length)


def rotate_half_pairs(x: torch.Tensor) -> torch.Tensor:
    """Rotates each of the two halves of the head dimension on its own (the 2D rotary layout)."""
    *lead, dim = x.shape
    x = x.view(*lead, 2, 2, dim // 4)
    return torch.stack((-x[..., 1, :], x[..., 0, :]), dim=-2).view(*lead, dim)


def apply_rotary_2d(
    query: torch.Tensor, key: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotates query and key `[batch, heads, seq, head_dim]`: the first half by position, the second by block."""
    return query * cos + rotate_half_pairs(query) * sin, key * cos + rotate_half_pairs(key) * sin


class GLMRotary2D(nn.Module):
    """cos/sin tables for 2D rotary positions: half of each head rotates with the position, half with the block
    position (ChatGLM-6B's layout)."""

    inv_freq: torch.Tensor

    def __init__(self, config: GLMConfig):
        super().__init__()
        self.rotary_dim = config.head_dim // 2
        self.theta = config.rope_theta
        self.fp16_frequencies = config.rope_fp16_frequencies
        self.register_buffer("inv_freq", self.compute_inv_freq(), persistent=False)

    def compute_inv_freq(self) -> torch.Tensor:
        exponents = torch.arange(0, self.rotary_dim, 2, dtype=torch.float32) / self.rotary_dim
        inv_freq = 1.0 / (self.theta**exponents)
        return inv_freq.half().float() if self.fp16_frequencies else inv_freq

    @torch.no_grad()
    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        angles = position_ids.float().unsqueeze(-1) * self.inv_freq  # [batch, 2, seq, rotary_dim / 2]
        angles = torch.cat([angles[:, 0], angles[:, 0], angles[:, 1], angles[:, 1]], dim=-1).unsqueeze(1)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference attention: a boolean "may attend" mask, THUDM's `attention_scale` overflow guard, and (with
    `attention_softmax_in_fp32`) the guard arithmetic and softmax in float32, as GLM-130B/ChatGLM do. Used for
    parity checks and `output_attentions`."""
    config = module.config
    guard = config.attention_scale
    scores = torch.matmul(query * (scaling / guard), key.transpose(2, 3))
    if config.attention_softmax_in_fp32:
        scores = scores.float()
    if attention_mask is None:
        q_len, k_len = scores.shape[-2:]
        attention_mask = torch.ones(q_len, k_len, dtype=torch.bool, device=scores.device).tril(k_len - q_len)
    if attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    else:
        scores = scores + attention_mask
    if guard > 1.0:
        scores = (scores - scores.amax(dim=-1, keepdim=True)) * guard
    weights = nn.functional.softmax(scores, dim=-1).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


class GLMAttention(nn.Module):
    """Multi-head self-attention with a fused query/key/value projection laid out per head as
    `[heads, (q, k, v), head_dim]`, so a column split of the projection keeps whole heads together."""

    def __init__(self, config: GLMConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5
        self.is_causal = True
        self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.query_key_value.deepnorm_role = "qkv"
        self.dense.deepnorm_role = "output"
        self.output_dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, seq_len, _ = hidden_states.shape
        qkv = self.query_key_value(hidden_states).view(batch, seq_len, -1, 3, self.head_dim)
        query, key, value = qkv.transpose(1, 2).unbind(dim=3)
        if rotary is not None:
            query, key = apply_rotary_2d(query, key, *rotary)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.config.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        output = self.dense(output.reshape(batch, seq_len, -1))
        return self.output_dropout(output), weights


class GLMMLP(nn.Module):
    """Feed-forward block: `act(x W1) W2`, or GeGLU `(x1 * act(x2)) W2` over the halves of `x W1`."""

    def __init__(self, config: GLMConfig):
        super().__init__()
        self.use_glu = config.use_glu
        up_size = config.intermediate_size * (2 if config.use_glu else 1)
        self.dense_h_to_4h = nn.Linear(config.hidden_size, up_size)
        self.dense_4h_to_h = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dense_h_to_4h.deepnorm_role = self.dense_4h_to_h.deepnorm_role = "mlp"
        self.act = ACT2FN[config.hidden_act]
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dense_h_to_4h(hidden_states)
        if self.use_glu:
            value, gate = hidden_states.chunk(2, dim=-1)
            hidden_states = value * self.act(gate)
        else:
            hidden_states = self.act(hidden_states)
        return self.dropout(self.dense_4h_to_h(hidden_states))


class GLMBlock(GradientCheckpointingLayer):
    """One transformer layer. Pre-LN: `x + f(LN(x))`. DeepNorm / ChatGLM post-LN: `alpha * LN(x) + f(LN(x))`."""

    def __init__(self, config: GLMConfig, layer_idx: int):
        super().__init__()
        self.pre_norm = config.layernorm_style == "pre"
        self.alpha = config.residual_alpha
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = GLMAttention(config, layer_idx)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = GLMMLP(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> torch.Tensor:
        normed = self.input_layernorm(hidden_states)
        attn_output, _ = self.attention(normed, attention_mask, rotary, cache, **kwargs)
        residual = hidden_states if self.pre_norm else normed * self.alpha
        hidden_states = residual + attn_output
        normed = self.post_attention_layernorm(hidden_states)
        residual = hidden_states if self.pre_norm else normed * self.alpha
        return residual + self.mlp(normed)


class GLMPreTrainedModel(GLMHubMixin, PreTrainedModel):
    config_class = GLMConfig
    config: GLMConfig
    base_model_prefix = "glm"
    supports_gradient_checkpointing = True
    _no_split_modules = ["GLMBlock"]
    _skip_keys_device_placement = ["cache", "past_key_values"]
    _supports_sdpa = True
    _can_compile_fullgraph = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = True
    _can_record_outputs = {"hidden_states": GLMBlock, "attentions": GLMAttention}
    # What a saved folder's config.json maps each Auto class to (saved folders load without glm_hf).
    remote_code_auto_map = {
        "AutoModel": "modeling_glm.GLMModel",
        "AutoModelForCausalLM": "modeling_glm.GLMForCausalLM",
        "AutoModelForSeq2SeqLM": "modeling_glm.GLMForConditionalGeneration",
        "AutoModelForMultipleChoice": "modeling_glm.GLMForMultipleChoice",
        "AutoModelForSequenceClassification": "modeling_glm.GLMForSequenceClassification",
    }

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, GLMRotary2D):
            init.copy_(module.inv_freq, module.compute_inv_freq())
        elif self.config.layernorm_style == "deepnorm" and hasattr(module, "deepnorm_role"):
            self._init_deepnorm(module)

    def _init_deepnorm(self, linear: nn.Linear) -> None:
        """GLM-130B's DeepNorm init: Xavier normal with gain (2N)^-1/2 on the value, attention output and MLP
        weights, and gain 1 on query and key."""
        beta = (2.0 * self.config.num_hidden_layers) ** -0.5
        if linear.deepnorm_role != "qkv":
            init.xavier_normal_(linear.weight, gain=beta)
            return
        heads, in_features = self.config.num_attention_heads, linear.in_features
        per_head = torch.empty(heads, 3, self.config.head_dim, in_features, dtype=linear.weight.dtype)
        for slot, gain in enumerate((1.0, 1.0, beta)):
            part = torch.empty(self.config.hidden_size, in_features, dtype=linear.weight.dtype)
            init.xavier_normal_(part, gain=gain)
            per_head[:, slot] = part.view(heads, self.config.head_dim, in_features)
        init.copy_(linear.weight, per_head.view(-1, in_features))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        refuse_ignored_quantization(
            loaded[0] if isinstance(loaded, tuple) else loaded, kwargs.get("quantization_config")
        )
        return loaded


class PrefixedKeyValues:
    """What the layers see as their cache when every token also attends to fixed prefix keys and values: each
    layer's keys are the prefix's, then the cached and new ones. The wrapped cache (None without caching) stores
    only the caller's tokens, so its length, cropping and reordering stay what `generate()` expects."""

    def __init__(self, prefix: list[tuple[torch.Tensor, torch.Tensor]], cache: Cache | None):
        self.prefix, self.cache = prefix, cache

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cache is not None:
            key, value = self.cache.update(key, value, layer_idx)
        prefix_key, prefix_value = self.prefix[layer_idx]
        batch = key.shape[0]
        return (
            torch.cat([prefix_key.expand(batch, -1, -1, -1), key], dim=2),
            torch.cat([prefix_value.expand(batch, -1, -1, -1), value], dim=2),
        )


class GLMModel(GLMPreTrainedModel):
    """The GLM transformer: embeddings with 2D positions, the layer stack and a final LayerNorm."""

    def __init__(self, config: GLMConfig):
        super().__init__(config)
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        if config.position_encoding == "learned_2d":
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
            self.block_position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        else:
            self.rotary = GLMRotary2D(config)
        self.embedding_dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList([GLMBlock(config, i) for i in range(config.num_hidden_layers)])
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def init_parallel_plans(self) -> None:
        """The config's tensor-parallel plan; with GeGLU the up-projection is sharded half by half instead of by
        contiguous columns (see `GLUColwiseParallel`), since its output packs the value and gate halves."""
        super().init_parallel_plans()
        if self.config.use_glu and self._tp_plan.get("layers.*.mlp.dense_h_to_4h") == "colwise":
            self._tp_plan["layers.*.mlp.dense_h_to_4h"] = TP_STYLE_GLU_UP

    def get_input_embeddings(self) -> nn.Embedding:
        return self.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.word_embeddings = value

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        prefix_key_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        r"""
        attention_mask (`torch.Tensor`, *optional*):
            One of: a 2D padding mask `[batch, past + seq]` (1 = token, 0 = padding; Part A ends at the first
            `<|startofpiece|>`), a 1D tensor of Part A lengths `[batch]` (THUDM's compact form), or a 4D boolean
            "may attend" mask `[batch, 1, seq, past + seq]` for layouts the other forms cannot express.
        position_ids (`torch.LongTensor`, *optional*):
            `[batch, 2, seq]` (position, block position). A 2D `[batch, seq]` tensor means block position 0.
            Derived from the tokens when omitted (see `blank_infilling.build_position_ids`).
        cache (`Cache`, *optional*):
            The KV cache of earlier tokens (`past_key_values` is its name before transformers 5.24; either works).
        prefix_key_values (`list[tuple[torch.Tensor, torch.Tensor]]`, *optional*):
            Per layer, keys and values `[1, heads, prefix, head_dim]` that every token sees before the cached ones
            and which the cache never stores (the causal head's `[gMASK] <|startofpiece|>`); needs a 4D
            `attention_mask` whose first `prefix` key columns cover them.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        check_not_empty(input_ids if input_ids is not None else inputs_embeds)
        cache = select_cache(cache, past_key_values)
        if self.training and torch.is_grad_enabled() and any(layer.gradient_checkpointing for layer in self.layers):
            # The backward pass replays each layer, which would write its keys into a cache a second time.
            cache, use_cache = None, False
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        # An int, or the 0-d tensor a static cache counts in: everything below computes with it on the device.
        past_length = cache.get_seq_length() if cache is not None else 0
        batch, seq_len = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        key_length = self._key_length(cache, seq_len)
        # Traced code (torch.compile, torch.export) cannot read values: its inputs are checked by the caller's
        # eager run, or not at all.
        fresh = not cache_may_hold_tokens(cache) and not torch.compiler.is_compiling()
        if fresh:  # where the inputs enter; decode steps continue checked inputs without reading values on the host
            self._check_inputs(input_ids, attention_mask, position_ids, batch, seq_len)
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        prefix_length = 0 if prefix_key_values is None else prefix_key_values[0][0].shape[-2]
        if prefix_length and (attention_mask is None or attention_mask.dim() != 4):
            raise ValueError("prefix_key_values need a 4D attention_mask that covers the prefix keys.")
        attention_mask = self._read_attention_mask(attention_mask, batch, seq_len, past_length, key_length)
        position_ids = self._resolve_position_ids(input_ids, attention_mask, position_ids, inputs_embeds, past_length)
        if fresh:
            self._check_position_range(position_ids)
        mask = self._resolve_attention_mask(
            input_ids, attention_mask, inputs_embeds, key_length, past_length, position_ids, prefix_length
        )
        hidden_states, rotary = self.embed(inputs_embeds, position_ids)
        layer_cache = cache if prefix_key_values is None else PrefixedKeyValues(prefix_key_values, cache)
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask=mask, rotary=rotary, cache=layer_cache, **kwargs)
        hidden_states = self.final_layernorm(hidden_states)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, **cache_output(cache))

    def embed(
        self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """The first layer's input and the rotary tables, from token embeddings and `[batch, 2, seq]` positions:
        GLM-130B's embedding gradient shrink, then the learned 2D position tables (rotary tables None) or the 2D
        rotary tables, then dropout. Shared with pipeline stages, which run the model in pieces."""
        shrink = self.config.embedding_grad_shrink
        if shrink < 1.0:
            inputs_embeds = inputs_embeds * shrink + inputs_embeds.detach() * (1.0 - shrink)
        rotary = None
        if self.config.position_encoding == "learned_2d":
            inputs_embeds = inputs_embeds + self.position_embeddings(position_ids[:, 0])
            inputs_embeds = inputs_embeds + self.block_position_embeddings(position_ids[:, 1])
        else:
            rotary = self.rotary(position_ids, inputs_embeds.dtype)
        return self.embedding_dropout(inputs_embeds), rotary

    @staticmethod
    def _key_length(cache: Cache | None, seq_len: int) -> int:
        """How many key slots attention sees besides a prefix: the cached and new tokens, or a static cache's size."""
        if cache is None:
            return seq_len
        key_length, key_offset = cache.get_mask_sizes(seq_len, 0)
        if key_offset != 0:
            raise ValueError("GLM needs a cache that keeps every token (DynamicCache or StaticCache).")
        return key_length

    def _check_inputs(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        batch: int,
        seq_len: int,
    ) -> None:
        """The checks that read values on the host (token ids in the vocabulary, mask values, Part A lengths,
        positions that never restart), run where inputs enter the model rather than at every decode step."""
        if input_ids is not None and not 0 <= int(input_ids.min()) <= int(input_ids.max()) < self.config.vocab_size:
            raise ValueError(
                f"input_ids must lie in [0, vocab_size={self.config.vocab_size}); got ids from "
                f"{int(input_ids.min())} to {int(input_ids.max())}. Was the tokenizer made for this model?"
            )
        if attention_mask is not None:
            if attention_mask.dim() <= 1:
                if attention_mask.numel() not in (1, batch) or attention_mask.is_floating_point():
                    raise ValueError(
                        f"A 1D attention_mask holds one integer Part A length per row ([batch] = [{batch}]), got "
                        f"shape {list(attention_mask.shape)} of {attention_mask.dtype}."
                    )
                check_part_a_lengths(attention_mask, seq_len)
            elif attention_mask.dim() == 4:
                check_attention_mask_4d(attention_mask)
            else:
                check_padding_mask(attention_mask)
        if position_ids is not None and position_ids.dim() == 2 and seq_len > 1:
            if bool((position_ids[:, 1:] < position_ids[:, :-1]).any()):
                raise ValueError(
                    "1D position_ids restart inside a row: packed sequences (e.g. DataCollatorWithFlattening) would "
                    "attend to each other, which GLM does not support; pad the sequences into separate rows."
                )

    def _check_position_range(self, position_ids: torch.Tensor) -> None:
        smallest, largest = (int(value) for value in torch.aminmax(position_ids))
        if smallest < 0:
            raise ValueError(f"position_ids must be non-negative; got {smallest}.")
        if largest >= self.config.max_position_embeddings:
            raise ValueError(
                f"The input needs position {largest} but the model has max_position_embeddings="
                f"{self.config.max_position_embeddings}: shorten the text before the blank, or generate fewer "
                f"tokens (max_new_tokens) for this span."
            )

    @staticmethod
    def _read_attention_mask(
        attention_mask: torch.Tensor | None,
        batch: int,
        seq_len: int,
        past_length: int | torch.Tensor,
        key_length: int,
    ) -> torch.Tensor | None:
        """The attention mask in the form the model computes with: Part A lengths as they are, 2D padding and 4D
        masks as booleans (see `blank_infilling.read_padding_mask` / `read_attention_mask_4d` for the additive
        forms). A 2D mask covers the cached and new tokens, or a static cache's every slot."""
        if attention_mask is None or attention_mask.dim() <= 1:
            return attention_mask
        if attention_mask.dim() == 4:
            return read_attention_mask_4d(attention_mask)
        if not padding_fits(attention_mask, batch, seq_len, past_length, key_length):
            raise ValueError(
                "A 2D attention_mask (padding) must have shape [batch, past + seq] = "
                f"{[batch, past_length + seq_len]}, got {list(attention_mask.shape)}."
            )
        return read_padding_mask(attention_mask)

    def _resolve_position_ids(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor,
        past_length: int | torch.Tensor,
    ) -> torch.Tensor:
        batch, seq_len = inputs_embeds.shape[:2]
        if position_ids is None:
            if isinstance(past_length, torch.Tensor) or past_length > 0:
                raise ValueError(
                    "position_ids are required when continuing from a KV cache: the new tokens' positions "
                    "depend on the blank they fill. Use blank_infilling.next_position_ids or model.generate()."
                )
            padding = attention_mask if attention_mask is not None and attention_mask.dim() == 2 else None
            if input_ids is None:  # embeddings: Part A positions (see _resolve_attention_mask)
                position_ids = part_a_position_ids(padding, batch, seq_len, inputs_embeds.device)
            else:
                position_ids = build_position_ids(
                    input_ids,
                    self.config.blank_token_ids,
                    self.config.sop_token_id,
                    padding,
                    self.config.first_filled_token_id,
                )
        elif position_ids.dim() == 2:
            position_ids = torch.stack([position_ids, torch.zeros_like(position_ids)], dim=1)
        if position_ids.shape != (batch, 2, seq_len):
            raise ValueError(
                f"position_ids must have shape [batch, 2, seq] = {[batch, 2, seq_len]} (position, block position), "
                f"got {list(position_ids.shape)}."
            )
        return position_ids

    def _resolve_attention_mask(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        inputs_embeds: torch.Tensor,
        key_length: int,
        past_length: int | torch.Tensor,
        position_ids: torch.Tensor,
        prefix_length: int = 0,
    ) -> torch.Tensor | None:
        batch, seq_len = inputs_embeds.shape[:2]
        if attention_mask is not None and attention_mask.dim() == 4:
            key_length += prefix_length
            if attention_mask.shape[0] != batch or attention_mask.shape[-2:] != (seq_len, key_length):
                raise ValueError(
                    f"A 4D attention_mask must have shape [batch, 1, seq, keys] (keys: prefix + cached tokens + seq)"
                    f" = {[batch, 1, seq_len, key_length]}, got {list(attention_mask.shape)}."
                )
            return attention_mask
        if attention_mask is not None and attention_mask.dim() <= 1:
            sep = attention_mask.to(inputs_embeds.device, torch.long).reshape(-1).expand(batch)
            return build_attention_mask(sep, seq_len, key_length, None, past_length)
        padding = attention_mask
        if isinstance(past_length, int) and past_length > 0 and seq_len == 1 and padding is None:
            return None  # one new token that sees every cached one: no mask needed
        if input_ids is None:
            # Without token ids no <|startofpiece|> can be found: Part B starts at the first token with a block
            # position (none without explicit positions: embeddings are then all Part A).
            sep = part_a_length_from_positions(position_ids)
        else:
            sep = part_a_length(input_ids, self.config.sop_token_id)
        # Continuing from a cache, the cached tokens hold Part A and the new ones are Part B (decided on the device).
        sep = sep * (past_length == 0)
        return build_attention_mask(sep, seq_len, key_length, padding, past_length)


class GLMWithVocabularyHead(GLMPreTrainedModel):
    """A `GLMModel` plus the output layer onto the vocabulary (tied to the word embeddings unless
    `config.tie_word_embeddings` is False): the shared body of every GLM head, which all score tokens."""

    _tied_weights_keys = {"lm_head.weight": "glm.word_embeddings.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}

    def __init__(self, config: GLMConfig):
        super().__init__(config)
        self.glm = GLMModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)


class GLMGenerativeHead(GLMWithVocabularyHead, GenerationMixin):
    """What both generating heads share: the loss they train with (`loss_kind`, the subclass's), generation stopping
    at `<|endofpiece|>` or eos, and the 2D padding mask kept for static caches (their forwards build GLM's masks)."""

    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}
    loss_kind: str

    def __init__(self, config: GLMConfig):
        super().__init__(config)
        self.loss_type = self.loss_kind
        self.post_init()
        stop_ids = [i for i in (config.eop_token_id, config.eos_token_id) if i is not None]
        self.generation_config.eos_token_id = stop_ids or None

    def create_masks_for_generate(
        self, config, inputs_embeds, attention_mask, *args, cache=None, is_first_iteration=False, **kwargs
    ):
        """Keeps the 2D padding mask that generate() would turn into a plain causal 4D mask for static caches (the
        forwards build GLM's masks from it). On decode steps it is padded to the static cache's size, so compiled
        decoding sees the same shapes at every step."""
        if attention_mask is None or attention_mask.dim() != 2 or is_first_iteration or cache is None:
            return attention_mask
        slots = cache.get_mask_sizes(inputs_embeds.shape[1], 0)[0]
        return torch.nn.functional.pad(attention_mask, (0, slots - attention_mask.shape[-1]))

    @staticmethod
    def _padding_for_generate(kwargs: dict) -> None:
        """Turns a 2D padding mask given to generate() into HF's 1/0 form (generate() extends it with ones each
        step, which would be wrong for an additive mask)."""
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() == 2:
            kwargs["attention_mask"] = read_padding_mask(mask).long()

    def _check_room_to_generate(self, last_position: int, generation_config, kwargs: dict, prompt_length: int):
        """Refuses, before any token is generated, a call whose new tokens would need positions past the position
        table (`max_position_embeddings`): each new token but the last is fed back one (block) position further
        than the prompt's `last_position`."""
        settings = copy.deepcopy(generation_config if generation_config is not None else self.generation_config)
        settings.update(**{name: kwargs[name] for name in ("max_new_tokens", "max_length") if name in kwargs})
        new_tokens = settings.max_new_tokens
        if new_tokens is None:
            new_tokens = settings.max_length - prompt_length
        largest = last_position + max(new_tokens - 1, 0)
        if largest >= self.config.max_position_embeddings:
            room = self.config.max_position_embeddings - last_position
            raise ValueError(
                f"Generating {new_tokens} tokens would need position {largest}, but the model has "
                f"max_position_embeddings={self.config.max_position_embeddings}: ask for at most {max(room, 0)} new "
                "tokens (max_new_tokens) or shorten the prompt."
            )


class GLMForConditionalGeneration(GLMChatMixin, GLMGenerativeHead):
    """GLM with its language-modelling head: blank infilling, and left-to-right generation after `[gMASK]`; also
    the chat head (`chat`, `stream_chat` as THUDM's ChatGLM-6B has them, and `glm-hf serve`): a chat prompt is read
    as GLM reads a generation request, the conversation bidirectionally as Part A.

    Labels follow GLM's alignment: the logit at position i predicts `labels[i]` (no shift; -100 is ignored).
    """

    loss_kind = "ForMaskedLM"

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        prompt_position_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        prompt_position_ids (`torch.LongTensor` `[batch, 2, prompt]`, *optional*):
            What `generate()` passes instead of `position_ids`: the 2D positions of the prompt, whose last span every
            later token continues (same position, block position + 1). The positions of the tokens of each call are
            read off by their index in the sequence, so cache continuation and assisted decoding's drafts need no
            position bookkeeping.
        labels (`torch.LongTensor` of shape `[batch, seq]`, *optional*):
            Targets aligned with the inputs: `labels[i]` is the token the model should predict at position i
            (in Part B, the next span token or `<|endofpiece|>`); -100 positions are ignored. In training mode
            only the labelled positions are projected onto the vocabulary (GLM's loss covers Part B only), and
            `logits` is None; in eval mode, or without labels, full logits are returned.
        """
        cache = select_cache(cache, past_key_values)
        if position_ids is None and prompt_position_ids is not None:
            seq_len = (input_ids if input_ids is not None else inputs_embeds).shape[1]
            past_length = cache.get_seq_length() if cache is not None else 0
            position_ids = span_continuation(prompt_position_ids, past_length, seq_len)
        outputs: BaseModelOutputWithPast = self.glm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        if labels is not None and labels.shape != hidden_states.shape[:2]:
            raise ValueError(
                f"labels must align with the inputs ([batch, seq] = {list(hidden_states.shape[:2])}), "
                f"got {list(labels.shape)}."
            )
        loss = logits = None
        if labels is not None and self.training:
            # GLM learns only from Part B, so only the labelled positions go through the vocabulary projection.
            labelled = labels != -100
            loss = self.loss_function(
                logits=self.lm_head(hidden_states[labelled]),
                labels=labels[labelled],
                vocab_size=self.config.vocab_size,
                **kwargs,
            )
        else:
            keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            logits = self.lm_head(hidden_states[:, keep, :])
            if labels is not None:
                loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            **cache_output(output_cache(outputs)),
        )

    @torch.no_grad()
    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, **kwargs):
        """Fills the first blank (`[MASK]`/`[sMASK]`/`[gMASK]`) of each prompt (ChatGLM-style configs: the first
        `[gMASK]` if there is one, `config.blank_fill_order`); `[gMASK]` at the end of the prompt
        is left-to-right generation, and prompts without any blank get one appended (plain continuation).
        Returns `prompt + <|startofpiece|> + fill` per row; generation stops at `<|endofpiece|>`. Batched prompts
        must be left-padded. All `GenerationMixin.generate` options apply. A prompt given as `inputs_embeds` (no
        token ids to find a blank in) is continued left to right; only the new tokens are returned, as for any
        model given embeddings."""
        input_ids = inputs if inputs is not None else kwargs.pop("input_ids", None)
        if input_ids is None and kwargs.get("inputs_embeds") is not None:
            return super().generate(generation_config=generation_config, **self._continue_embedded_prompt(kwargs))
        if input_ids is None:
            raise ValueError("GLM generate() needs input_ids holding a blank ([MASK], [sMASK] or [gMASK]).")
        check_not_empty(input_ids)
        self._padding_for_generate(kwargs)
        attention_mask = kwargs.get("attention_mask")
        if attention_mask is not None and attention_mask.dim() == 1:
            # A training batch (Part A lengths as the mask, as Seq2SeqTrainer passes it with predict_with_generate):
            # generate from each row's Part A only; its Part B holds the reference answer.
            kwargs.pop("labels", None)
            kwargs.pop("position_ids", None)
            input_ids, kwargs["attention_mask"] = left_padded_part_a(input_ids, attention_mask, self.config)
        if kwargs.get("position_ids") is None:
            input_ids, kwargs["attention_mask"] = self._continue_plain_prompts(input_ids, kwargs.get("attention_mask"))
            layout = generation_layout(
                input_ids,
                self.config.blank_token_ids,
                self.config.sop_token_id,
                kwargs.get("attention_mask"),
                self.config.first_filled_token_id,
            )
            input_ids = layout.input_ids
            kwargs["attention_mask"] = layout.attention_mask
            kwargs["position_ids"] = layout.position_ids
        # GLM's positions travel as the prompt's (see forward): transformers' own position bookkeeping advances every
        # row of a position tensor, which is wrong for GLM's first row (the blank's position stays fixed).
        kwargs["prompt_position_ids"] = kwargs.pop("position_ids")
        last_block_position = int(kwargs["prompt_position_ids"][:, 1, -1].max())
        self._check_room_to_generate(last_block_position, generation_config, kwargs, input_ids.shape[1])
        return super().generate(input_ids, generation_config, **kwargs)

    def _prepare_position_ids_for_generation(self, inputs_tensor, model_kwargs):
        """None: positions come from `prompt_position_ids` (see generate)."""
        return None

    def _continue_embedded_prompt(self, kwargs: dict) -> dict:
        """generate() kwargs for an embedded prompt: the embeddings as Part A, then `[gMASK] <|startofpiece|>`."""
        embeds = kwargs.pop("inputs_embeds")
        batch = embeds.shape[0]
        ids = torch.tensor([[self.config.gmask_token_id, self.config.sop_token_id]], device=embeds.device)
        embeds = torch.cat([embeds, self.get_input_embeddings()(ids).to(embeds.dtype).expand(batch, -1, -1)], 1)
        mask = kwargs.pop("attention_mask", None)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device) if mask is None else mask
        mask = torch.cat([mask, torch.ones_like(mask[:, :2])], dim=1)
        positions = span_after_part_a_position_ids(mask)
        return {**kwargs, "inputs_embeds": embeds, "attention_mask": mask, "prompt_position_ids": positions}

    def _continue_plain_prompts(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Appends `[gMASK]` to each prompt that has no blank and no started span, so plain text is continued left to
        right; the other rows of the batch get one more left padding instead, keeping the batch left-padded."""
        special = torch.tensor([*self.config.blank_token_ids, self.config.sop_token_id], device=input_ids.device)
        plain = ~torch.isin(input_ids, special).any(-1, keepdim=True)
        if self.config.gmask_token_id is None or not plain.any():
            return input_ids, attention_mask
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        column = torch.ones_like(input_ids[:, :1])
        appended = torch.cat([input_ids, column * self.config.gmask_token_id], -1), torch.cat([mask, column], -1)
        shifted = torch.cat([column * self.config.pad_token_id, input_ids], -1), torch.cat([column * 0, mask], -1)
        return torch.where(plain, appended[0], shifted[0]), torch.where(plain, appended[1], shifted[1])


def left_padded_part_a(
    input_ids: torch.Tensor, part_a_lengths: torch.Tensor, config: GLMConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Part A of each row of a right-padded training batch, left-padded for generation, with its padding mask."""
    width = int(part_a_lengths.max())
    prompts = torch.full((input_ids.shape[0], width), config.pad_token_id, dtype=input_ids.dtype)
    padding = torch.zeros(input_ids.shape[0], width, dtype=torch.long)
    for row, length in enumerate(part_a_lengths.tolist()):
        prompts[row, width - length :] = input_ids[row, :length]
        padding[row, width - length :] = 1
    return prompts.to(input_ids.device), padding.to(input_ids.device)


class GLMForCausalLM(GLMGenerativeHead):
    """GLM as a causal language model over plain text: what `AutoModelForCausalLM` users (TRL, lm-eval, the causal
    recipe with `DataCollatorForLanguageModeling(mlm=False)`, text generation, serving) expect.

    Text is read strictly left to right in GLM's own left-to-right layout: after `[gMASK] <|startofpiece|>`, as one
    causal Part B span filling a `[gMASK]` at position 0, which is what GLM and ChatGLM are trained to continue
    (measured against THUDM's plain causal default in `benchmarks/bench_causal_layout.py`). The two prefix tokens
    stay inside: logits, labels, the KV cache and generate()'s output cover the caller's tokens only. Labels follow
    HF's causal convention (labels = input_ids, shifted inside, -100 ignored); padding on either side never changes
    real tokens' logits; `position_ids`, if given, are the caller's 1D text positions. Blank tokens in the text are
    read as ordinary tokens; blank infilling is `GLMForConditionalGeneration`'s job. Same weights as every head.
    """

    loss_kind = "ForCausalLM"

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        prefix_key_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        attention_mask (`torch.Tensor` `[batch, past + seq]`, *optional*): the padding mask (either side).
        position_ids (`torch.LongTensor` `[batch, seq]`, *optional*): text positions, counting real tokens from 0;
            derived from the padding mask when omitted. Positions must not restart inside a row: packed sequences
            are refused (they would attend to each other).
        labels (`torch.LongTensor` `[batch, seq]`, *optional*): HF's causal labels (`labels[i]` is predicted from
            tokens `<= i - 1`; usually `input_ids`, with -100 where no loss is wanted).
        prefix_key_values (*optional*): the prefix's keys and values from `left_to_right_prefix_key_values()`;
            `generate()` computes them once per call instead of once per step.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        check_not_empty(input_ids if input_ids is not None else inputs_embeds)
        cache = select_cache(cache, past_key_values)
        batch, seq_len = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        device = (input_ids if input_ids is not None else inputs_embeds).device
        past_length = cache.get_seq_length() if cache is not None else 0
        if not cache_may_hold_tokens(cache) and not torch.compiler.is_compiling():  # see GLMModel._check_inputs
            self._check_inputs(attention_mask, position_ids)
        padding = self._padding_mask(attention_mask, batch, seq_len, past_length, cache)
        positions = self._text_positions(position_ids, padding, past_length, seq_len, device)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        checkpointing = self.training and torch.is_grad_enabled() and self.is_activation_checkpointing
        if (use_cache or cache is not None) and not checkpointing:
            outputs, cache = self._cached_forward(
                input_ids, inputs_embeds, padding, positions, cache, past_length, prefix_key_values, **kwargs
            )
        else:
            outputs, cache = self._prefixed_forward(input_ids, inputs_embeds, padding, positions, **kwargs)
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(outputs.last_hidden_state[:, keep, :])
        loss = None
        if labels is not None:
            if labels.shape != (batch, seq_len):
                raise ValueError(f"labels must have the inputs' shape {[batch, seq_len]}, got {list(labels.shape)}.")
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            **cache_output(cache),
        )

    def left_to_right_prefix_key_values(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the keys and values of `[gMASK] <|startofpiece|>`: the same for every text (the prefix sees
        no text), so they are computed once and put before each layer's cached keys."""
        ids, positions = left_to_right_prefix(self.config.gmask_token_id, self.config.sop_token_id)
        recorder = DynamicCache(config=self.config)
        self.glm(input_ids=ids.to(self.device), position_ids=positions.to(self.device), cache=recorder, use_cache=True)
        return [(layer.keys, layer.values) for layer in recorder.layers]

    @staticmethod
    def _check_inputs(attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None) -> None:
        """The checks that read values on the host, run where inputs enter rather than at every decode step."""
        if attention_mask is not None and attention_mask.dim() == 2:
            check_padding_mask(attention_mask)
        if position_ids is not None and position_ids.dim() == 2 and position_ids.shape[-1] > 1:
            if bool((position_ids[:, 1:] < position_ids[:, :-1]).any()):
                raise ValueError(
                    "position_ids restart inside a row: packed sequences (e.g. DataCollatorWithFlattening) would "
                    "attend to each other, which GLMForCausalLM does not support; pad the sequences into separate "
                    "rows."
                )

    @staticmethod
    def _padding_mask(
        attention_mask: torch.Tensor | None,
        batch: int,
        seq_len: int,
        past_length: int | torch.Tensor,
        cache: Cache | None,
    ) -> torch.Tensor | None:
        """The 2D padding mask as booleans; it covers the cached and new tokens, or every slot of a static cache
        (what `create_masks_for_generate` gives compiled decoding)."""
        if attention_mask is None:
            return None
        key_length = seq_len if cache is None else cache.get_mask_sizes(seq_len, 0)[0]
        if attention_mask.dim() != 2 or not padding_fits(attention_mask, batch, seq_len, past_length, key_length):
            raise ValueError(
                f"GLMForCausalLM takes a 2D padding mask [batch, past + seq] = {[batch, past_length + seq_len]}, got "
                f"{list(attention_mask.shape)}; GLM layouts with blanks and Part B spans belong to "
                "GLMForConditionalGeneration."
            )
        return read_padding_mask(attention_mask)

    def _text_positions(
        self,
        position_ids: torch.Tensor | None,
        padding: torch.Tensor | None,
        past_length: int | torch.Tensor,
        seq_len: int,
        device,
    ) -> torch.Tensor:
        if position_ids is None:
            return text_positions(padding, past_length, seq_len, device)
        if position_ids.dim() != 2 or position_ids.shape[-1] != seq_len:
            raise ValueError(
                f"GLMForCausalLM takes 1D text positions per row ([batch, seq], seq = {seq_len}), got shape "
                f"{list(position_ids.shape)}."
            )
        return position_ids

    def _cached_forward(self, input_ids, inputs_embeds, padding, positions, cache, past_length, prefix, **kwargs):
        """The text after the prefix's stored keys and values; the cache holds the text's tokens only. Returns the
        body's outputs (covering the text) and the cache."""
        seq_len = positions.shape[-1]
        batch = (input_ids if input_ids is not None else inputs_embeds).shape[0]
        cache = cache if cache is not None else DynamicCache(config=self.config)
        key_length, _ = cache.get_mask_sizes(seq_len, 0)
        no_part_a = torch.zeros(batch, dtype=torch.long, device=positions.device)
        mask = build_attention_mask(
            no_part_a, seq_len, key_length, padding, past_length, visible_prefix=LEFT_TO_RIGHT_PREFIX_LENGTH
        )
        outputs = self.glm(
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=mask,
            position_ids=left_to_right_position_ids(positions).expand(batch, -1, -1),
            cache=cache,
            use_cache=True,
            prefix_key_values=prefix if prefix is not None else self.left_to_right_prefix_key_values(),
            **kwargs,
        )
        if outputs.attentions is not None:  # the weights on the two prefix keys are left out
            outputs.attentions = tuple(weights[..., LEFT_TO_RIGHT_PREFIX_LENGTH:] for weights in outputs.attentions)
        return outputs, cache

    def _prefixed_forward(self, input_ids, inputs_embeds, padding, positions, **kwargs):
        """The prefix and the text in one sequence, without a cache (training, also under activation
        checkpointing); the prefix's outputs are dropped."""
        prefix_ids, prefix_positions = left_to_right_prefix(self.config.gmask_token_id, self.config.sop_token_id)
        batch, seq_len = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        device = positions.device
        prefix_ids, prefix_positions = prefix_ids.to(device).expand(batch, -1), prefix_positions.to(device)
        if input_ids is not None:
            input_ids = torch.cat([prefix_ids, input_ids], dim=1)
        else:
            prefix_embeds = self.glm.word_embeddings(prefix_ids).to(inputs_embeds.dtype)
            inputs_embeds = torch.cat([prefix_embeds, inputs_embeds], dim=1)
        positions_2d = torch.cat(
            [prefix_positions.expand(batch, -1, -1), left_to_right_position_ids(positions).expand(batch, -1, -1)], -1
        )
        if padding is not None:
            padding = torch.cat([torch.ones_like(padding[:, :LEFT_TO_RIGHT_PREFIX_LENGTH]), padding], dim=1)
        length = LEFT_TO_RIGHT_PREFIX_LENGTH + seq_len
        gmask_is_part_a = torch.ones(batch, dtype=torch.long, device=device)
        mask = build_attention_mask(gmask_is_part_a, length, length, padding)
        outputs = self.glm(
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=mask,
            position_ids=positions_2d,
            use_cache=False,
            **kwargs,
        )
        text = slice(LEFT_TO_RIGHT_PREFIX_LENGTH, None)
        outputs.last_hidden_state = outputs.last_hidden_state[:, text]
        if outputs.hidden_states is not None:
            outputs.hidden_states = tuple(states[:, text] for states in outputs.hidden_states)
        if outputs.attentions is not None:  # the weights on the two prefix keys are left out
            outputs.attentions = tuple(weights[..., text, text] for weights in outputs.attentions)
        return outputs, None

    @torch.no_grad()
    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, **kwargs):
        """`GenerationMixin.generate`, with the prefix's keys and values computed once for the whole call.
        Returns `input_ids + new tokens`, as for any causal LM."""
        input_ids = inputs if inputs is not None else kwargs.get("input_ids")
        if input_ids is not None:
            check_not_empty(input_ids)
            self._padding_for_generate(kwargs)
            mask = kwargs.get("attention_mask")
            text_length = input_ids.shape[1] if mask is None else int(mask.sum(-1).max())
            last_position = text_length - 1 + LEFT_TO_RIGHT_PREFIX_LENGTH
            self._check_room_to_generate(last_position, generation_config, kwargs, input_ids.shape[1])
        if kwargs.get("prefix_key_values") is None:
            kwargs["prefix_key_values"] = self.left_to_right_prefix_key_values()
        return super().generate(inputs, generation_config, **kwargs)


class GLMForMultipleChoice(GLMWithVocabularyHead):
    """Cloze multiple choice: each choice is scored by the log-probability of generating it into the blank
    (`config.choice_scoring`: mean over its tokens, or THUDM's sum), all choices of an example in one forward pass.

    Inputs come from `GLMTokenizer.build_inputs_for_multiple_choice`: every choice is its own Part B span that sees
    Part A and its own prefix only. `logits` are the choice scores `[batch, choices]` (absent choices get -inf);
    with `labels` (the correct choice per example) the loss is the cross-entropy over choices. The weights are
    those of `GLMForConditionalGeneration`, so a pretrained checkpoint loads directly.
    """

    def __init__(self, config: GLMConfig):
        super().__init__(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor,
        choice_labels: torch.LongTensor,
        choice_index: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        num_choices: int | None = None,
        **kwargs,
    ) -> MultipleChoiceModelOutput:
        r"""
        choice_labels (`torch.LongTensor` `[batch, seq]`): the choice token each position predicts, -100 elsewhere.
        choice_index (`torch.LongTensor` `[batch, seq]`): which choice a labelled position belongs to, -1 elsewhere.
        labels (`torch.LongTensor` `[batch]`, *optional*): the index of the correct choice.
        num_choices (`int`, *optional*): width of `logits`; defaults to the most choices in the batch.
        """
        outputs = self.glm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)
        scores = choice_scores(
            self.lm_head, outputs.last_hidden_state, choice_labels, choice_index, num_choices, self.config
        )
        loss = nn.functional.cross_entropy(scores, labels) if labels is not None else None
        return MultipleChoiceModelOutput(
            loss=loss, logits=scores, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class GLMForSequenceClassification(GLMWithVocabularyHead):
    """Classification as a cloze task (PET): the text is put into the pattern of `config.cloze_prefix_ids` /
    `cloze_suffix_ids`, and label i is scored by generating its verbalizer `config.verbalizer_ids[i]` into the
    pattern's blank; softmax over `logits` `[batch, labels]` is p(y|x) normalised over labels. Inputs are plain
    tokenizer output, so `pipeline("text-classification")` works. The pattern always applies when the config has one
    (a text holding its own blank says so with `plain_text=False`), so a `[MASK]` in a text cannot replace it;
    tokenize untrusted text with `split_special_tokens=True` (there, `classifier(texts, split_special_tokens=True)`)
    so that such a string stays text: a blank token inside a text in the pattern is refused."""

    def __init__(self, config: GLMConfig):
        if not config.verbalizer_ids:
            raise ValueError(
                "GLMForSequenceClassification needs config.verbalizer_ids (one token id list per label); build them "
                "with glm_hf.training.cloze.cloze_config(tokenizer, pattern, label_words)."
            )
        if len(config.id2label) != len(config.verbalizer_ids):
            raise ValueError(
                f"config has {len(config.id2label)} labels (id2label) but {len(config.verbalizer_ids)} verbalizers; "
                "give one verbalizer per label (cloze_config sets both)."
            )
        super().__init__(config)
        self.num_labels = len(config.verbalizer_ids)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        plain_text: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        r"""
        attention_mask (`torch.Tensor` `[batch, seq]`, *optional*): the tokenizer's padding mask (either side).
        labels (`torch.LongTensor` `[batch]`, *optional*): the label of each text; loss is the cross-entropy.
        plain_text (`bool`, *optional*): `True` (the default when the config has a pattern): each text is plain
            text, put into the pattern, whose blank is scored; a blank or `<|startofpiece|>` token inside a text is
            refused. `False` (the default without a pattern): each text is GLM markup holding its own blank, used
            as it is.
        """
        batch = self.cloze_inputs(input_ids, attention_mask, plain_text)
        outputs = self.glm(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
            **kwargs,
        )
        scores = choice_scores(
            self.lm_head,
            outputs.last_hidden_state,
            batch["choice_labels"],
            batch["choice_index"],
            self.num_labels,
            self.config,
        )
        loss = nn.functional.cross_entropy(scores, labels) if labels is not None else None
        return SequenceClassifierOutput(
            loss=loss, logits=scores, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )

    def cloze_inputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, plain_text: bool | None = None
    ) -> dict[str, torch.Tensor]:
        """The multiple-choice layout of each text (wrapped in the pattern unless `plain_text=False`, see forward)
        with every verbalizer as a choice."""
        config = self.config
        prefix, suffix = config.cloze_prefix_ids or [], config.cloze_suffix_ids or []
        plain_text = bool(prefix or suffix) if plain_text is None else plain_text
        if plain_text and not (prefix or suffix):
            raise ValueError(
                "plain_text=True puts each text into the cloze pattern, but the config has none (cloze_prefix_ids / "
                "cloze_suffix_ids): build it with glm_hf.training.cloze.cloze_config(tokenizer, pattern, label_words)."
            )
        keep = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        layouts = []
        for row, (ids, real) in enumerate(zip(input_ids.tolist(), keep.tolist(), strict=True)):
            text = [token for token, is_real in zip(ids, real, strict=True) if is_real]
            if plain_text:
                text = [*prefix, *self._text_for_pattern(text, row), *suffix]
            layouts.append(
                multiple_choice_layout(text, config.verbalizer_ids, config.blank_token_ids, config.sop_token_id)
            )
        batch = batch_multiple_choice(layouts, config.pad_token_id)
        return {name: tensor.to(input_ids.device) for name, tensor in batch.items()}

    def _text_for_pattern(self, text: list[int], row: int) -> list[int]:
        """The text to put into the pattern, without the generation request ChatGLM's tokenizer appends to every
        text (`[gMASK] <sop>`); refuses other GLM layout tokens in it: the pattern's blank is the one scored."""
        request = [self.config.gmask_token_id, self.config.sop_token_id]
        text = text[: -len(request)] if text[-len(request) :] == request else text
        layout_tokens = {*self.config.blank_token_ids, self.config.sop_token_id} & set(text)
        if layout_tokens:
            raise ValueError(
                f"Text {row} holds the token ids {sorted(layout_tokens)} (a blank or <|startofpiece|>), but it is put "
                "into the cloze pattern, which brings the blank: tokenize untrusted text with "
                "split_special_tokens=True (a [MASK] typed into it stays text), or pass plain_text=False if the "
                "text's own blank is meant."
            )
        return text


def choice_scores(
    lm_head: nn.Linear,
    hidden_states: torch.Tensor,
    choice_labels: torch.Tensor,
    choice_index: torch.Tensor,
    num_choices: int | None,
    config: GLMConfig,
) -> torch.Tensor:
    """`[batch, choices]` scores: per choice, the mean (or sum) of its tokens' log-probabilities; -inf for choices an
    example does not have. Only the labelled positions go through the vocabulary projection."""
    picked = choice_index >= 0
    if choice_labels.shape != choice_index.shape or (choice_labels[picked] < 0).any():
        raise ValueError("choice_labels and choice_index must have the same shape and label every choice position.")
    batch_size = choice_index.shape[0]
    width = num_choices if num_choices is not None else int(choice_index.max()) + 1
    log_probs = lm_head(hidden_states[picked]).float().log_softmax(-1)
    token_scores = log_probs.gather(-1, choice_labels[picked][:, None])[:, 0]
    rows = torch.arange(batch_size, device=choice_index.device)[:, None].expand_as(choice_index)[picked]
    slot = rows * width + choice_index[picked]
    sums = token_scores.new_zeros(batch_size * width).index_add(0, slot, token_scores)
    counts = token_scores.new_zeros(batch_size * width).index_add(0, slot, torch.ones_like(token_scores))
    scores = sums / counts.clamp(min=1) if config.choice_scoring == "mean" else sums
    return scores.masked_fill(counts == 0, float("-inf")).view(batch_size, width)


# Saving any of these writes this file and its siblings next to the weights, with an `auto_map` naming every head,
# so the folder loads with `trust_remote_code=True` where glm_hf is not installed.
GLMModel.register_for_auto_class("AutoModel")
GLMForConditionalGeneration.register_for_auto_class("AutoModelForSeq2SeqLM")
GLMForCausalLM.register_for_auto_class("AutoModelForCausalLM")
GLMForMultipleChoice.register_for_auto_class("AutoModelForMultipleChoice")
GLMForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "GLMPreTrainedModel",
    "GLMModel",
    "GLMForCausalLM",
    "GLMForConditionalGeneration",
    "GLMForMultipleChoice",
    "GLMForSequenceClassification",
]
