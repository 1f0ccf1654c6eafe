"""The GLM network: 2D rotary, attention, MLP, the transformer layer, `GLMPreTrainedModel` and `GLMModel`, the
body every head in `modeling_glm.py` shares. Positions and masks come from `blank_infilling.model_layout`."""

from collections.abc import Callable

import torch
from torch import nn
from transformers import GradientCheckpointingLayer, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .blank_infilling import (
    LEFT_TO_RIGHT_PREFIX_LENGTH,
    causal_text_layout,
    check_attention_mask,
    check_model_inputs,
    left_to_right_position_ids,
    left_to_right_prefix,
    left_to_right_sequence,
    left_to_right_text_mask,
    model_layout,
    one_input,
)
from .configuration_glm import GLMConfig
from .hub_glm import GLMHubMixin
from .transformers_compat import (
    TP_STYLE_GLU_UP,
    cache_may_hold_tokens,
    cache_output,
    capture_outputs,
    merge_with_config_defaults,
    select_cache,
)


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
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_record_outputs = {"hidden_states": GLMBlock, "attentions": GLMAttention}

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

    def _checkpointing(self) -> bool:
        """Whether this forward runs under activation checkpointing (its backward replays every layer)."""
        return self.training and torch.is_grad_enabled() and self.is_activation_checkpointing


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
            "may attend" mask `[batch, 1, seq, past + seq]` for layouts the other forms cannot express, or a
            `blank_infilling.LayoutMask` (the heads' own layouts, in the form every attention implementation takes).
        position_ids (`torch.LongTensor`, *optional*): `[batch, 2, seq]` (position, block position); `[batch, seq]`
            means block position 0. Derived from the tokens when omitted (`blank_infilling.build_position_ids`).
        cache (`Cache`, *optional*): the KV cache of earlier tokens (`past_key_values` before transformers 5.24).
        prefix_key_values (`list[tuple[torch.Tensor, torch.Tensor]]`, *optional*): per layer, keys and values
            `[1, heads, prefix, head_dim]` every token sees before the cached ones, never stored in the cache (the
            causal head's `[gMASK] <|startofpiece|>`); needs a 4D `attention_mask` covering them.
        """
        inputs = one_input(input_ids, inputs_embeds)
        cache = select_cache(cache, past_key_values)
        if self._checkpointing():  # the backward replay would write each layer's keys into the cache again
            cache, use_cache = None, False
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        # An int, or the 0-d tensor a static cache counts in: everything below computes with it on the device.
        past_length = cache.get_seq_length() if cache is not None else 0
        # Values are read on the host only where inputs enter: not at decode steps, nor in traced code.
        fresh = not cache_may_hold_tokens(cache) and not torch.compiler.is_compiling()
        if fresh:
            check_model_inputs(input_ids, attention_mask, position_ids, inputs.shape[:2], self.config.vocab_size)
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        prefix_length = 0 if prefix_key_values is None else prefix_key_values[0][0].shape[-2]
        key_length = self._key_length(cache, inputs.shape[1])
        position_ids, mask = model_layout(
            self.config,
            input_ids,
            inputs_embeds,
            attention_mask,
            position_ids,
            past_length,
            key_length,
            prefix_length,
            check_range=fresh,
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


class GLMLeftToRightModel(GLMModel):
    """`GLMModel` reading plain text strictly left to right, in GLM's own left-to-right layout: after
    `[gMASK] <|startofpiece|>`, as one causal Part B span filling a `[gMASK]` at position 0 (text token k at the 2D
    position (0, k + 2)), which is what GLM and ChatGLM are trained to continue. The body of `GLMForCausalLM`, and
    what clients that run a causal LM's backbone themselves get through `model.base_model` (TRL's fused LM head).

    The two prefix tokens stay inside: outputs, hidden states, attentions and the KV cache cover the caller's tokens
    only. Without a cache (training) the prefix is prepended; with one, the prefix's keys and values (the same for
    every text: the prefix sees no text) are put before each layer's cached keys. Same weights as `GLMModel`.
    """

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
        attention_mask (`torch.Tensor`, *optional*): a padding mask `[batch, past + seq]` (either side), or a 4D
            "may attend" mask `[batch, 1, seq, past + seq]` over the caller's tokens (boolean, 1/0 or additive; the
            prefix stays visible to every token).
        position_ids (`torch.LongTensor` `[batch, seq]`, *optional*): text positions, counting real tokens from 0;
            derived from the padding mask when omitted. Where they do not continue by one inside a row, a new
            document starts (packed, padding-free rows, as `DataCollatorWithFlattening` and TRL's `packing=True`
            make them): each document sees the prefix and itself only, as in a row of its own.
        use_cache (`bool`, *optional*): whether to return a KV cache; by default only outside training.
        prefix_key_values (*optional*): the prefix's keys and values from `left_to_right_prefix_key_values()`;
            `generate()` computes them once per call instead of once per step.
        """
        inputs = one_input(input_ids, inputs_embeds)
        cache = select_cache(cache, past_key_values)
        batch, seq_len = inputs.shape[:2]
        past_length = cache.get_seq_length() if cache is not None else 0
        new_tokens_only = not cache_may_hold_tokens(cache)
        read_host = new_tokens_only and not torch.compiler.is_compiling()  # as in GLMModel.forward
        if read_host and attention_mask is not None:
            check_attention_mask(attention_mask)
        key_length = self._key_length(cache, seq_len)
        positions, text_mask = causal_text_layout(
            attention_mask,
            position_ids,
            (batch, seq_len),
            past_length,
            key_length,
            new_tokens_only,
            read_host,
            inputs.device,
        )
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if (use_cache or cache is not None) and not self._checkpointing():
            cache = cache if cache is not None else DynamicCache(config=self.config)
            return self._after_stored_prefix(
                input_ids, inputs_embeds, positions, text_mask, cache, prefix_key_values, **kwargs
            )
        return self._with_prefix(input_ids, inputs_embeds, positions, text_mask, **kwargs)

    def left_to_right_prefix_key_values(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the keys and values of `[gMASK] <|startofpiece|>` (the same for every text, since the prefix
        sees no text)."""
        ids, positions = left_to_right_prefix(self.config.gmask_token_id, self.config.sop_token_id)
        recorder = DynamicCache(config=self.config)
        device = self.word_embeddings.weight.device
        super().forward(input_ids=ids.to(device), position_ids=positions.to(device), cache=recorder, use_cache=True)
        return [(layer.keys, layer.values) for layer in recorder.layers]

    def _after_stored_prefix(self, input_ids, inputs_embeds, positions, text_mask, cache, prefix, **kwargs):
        """The text after the prefix's stored keys and values; `cache` holds the text's tokens only."""
        inputs = input_ids if input_ids is not None else inputs_embeds
        batch, seq_len = inputs.shape[:2]
        past_length = cache.get_seq_length()
        key_length = self._key_length(cache, seq_len)
        mask = left_to_right_text_mask(text_mask, batch, seq_len, key_length, past_length, inputs.device)
        outputs = super().forward(
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
        return outputs

    def _with_prefix(self, input_ids, inputs_embeds, positions, text_mask, **kwargs):
        """The prefix and the text in one sequence, without a cache (training, also under activation
        checkpointing); the prefix's outputs are dropped."""
        prefix_ids, _ = left_to_right_prefix(self.config.gmask_token_id, self.config.sop_token_id)
        batch = (input_ids if input_ids is not None else inputs_embeds).shape[0]
        prefix_ids = prefix_ids.to(positions.device).expand(batch, -1)
        if input_ids is not None:
            input_ids = torch.cat([prefix_ids, input_ids], dim=1)
        else:
            prefix_embeds = self.word_embeddings(prefix_ids).to(inputs_embeds.dtype)
            inputs_embeds = torch.cat([prefix_embeds, inputs_embeds], dim=1)
        positions_2d, mask = left_to_right_sequence(positions, text_mask, batch)
        outputs = super().forward(
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
        return outputs


__all__ = ["GLMBlock", "GLMLeftToRightModel", "GLMModel", "GLMPreTrainedModel", "PrefixedKeyValues"]
