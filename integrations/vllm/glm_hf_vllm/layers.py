"""GLM's layers written with vLLM's parallel layers and attention: 2D positions, GLM's prefix-LM attention, the MLP
(GeLU or GeGLU) and the transformer block (pre-LN, or post-LN with a residual scale alpha).

Tensor parallelism: the fused query/key/value projection of a glm-hf checkpoint is laid out per head
(`[heads, (q, k, v), head_dim]` rows), so a contiguous column split gives each rank whole heads; the attention output
and MLP down-projections are row-parallel (one all-reduce each); the GeGLU up-projection packs `[value | gate]` and is
loaded as two merged column shards, so every rank holds the values and the gates of the same features.
"""

from dataclasses import dataclass

import torch
from torch import nn
from vllm.config import CacheConfig
from vllm.distributed import get_tensor_model_parallel_world_size
from vllm.model_executor.layers.activation import get_act_fn
from vllm.model_executor.layers.attention.prefill_prefix_lm_attention import PrefillPrefixLMAttention
from vllm.model_executor.layers.layernorm import LayerNorm
from vllm.model_executor.layers.linear import ColumnParallelLinear, MergedColumnParallelLinear, RowParallelLinear
from vllm.model_executor.layers.quantization import QuantizationConfig

from .settings import GLMSettings


@dataclass
class PrefillSpan:
    """A prefill in this step whose prompt holds Part B (`<|startofpiece|>` at `start + sep`): its tokens
    `start .. end - 1` attend as GLM's layout says (Part A bidirectionally, Part B causally), which a fully
    non-causal prefill does not give, so its attention rows are recomputed (see `GLMAttention.forward`)."""

    start: int
    end: int
    sep: int


def rotate_half_pairs(x: torch.Tensor) -> torch.Tensor:
    """Rotates each half of the head dimension on its own (the 2D rotary layout): `[a, b] -> [-b, a]` per half."""
    *lead, dim = x.shape
    x = x.view(*lead, 2, 2, dim // 4)
    return torch.stack((-x[..., 1, :], x[..., 0, :]), dim=-2).view(*lead, dim)


class Rotary2D(nn.Module):
    """cos/sin tables of 2D rotary positions: the first half of each head turns with the position, the second half
    with the block position (GLM-130B, ChatGLM-6B)."""

    def __init__(self, settings: GLMSettings):
        super().__init__()
        rotary_dim = settings.head_dim // 2
        exponents = torch.arange(0, rotary_dim, 2, dtype=torch.float32) / rotary_dim
        inv_freq = 1.0 / (settings.rope_theta**exponents)
        if settings.rope_fp16_frequencies:  # ChatGLM-6B's checkpoints were trained with float16-rounded frequencies
            inv_freq = inv_freq.half().float()
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, position: torch.Tensor, block: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        angles_a = position.float().unsqueeze(-1) * self.inv_freq
        angles_b = block.float().unsqueeze(-1) * self.inv_freq
        angles = torch.cat([angles_a, angles_a, angles_b, angles_b], dim=-1).unsqueeze(1)  # [tokens, 1, head_dim]
        return angles.cos().to(dtype), angles.sin().to(dtype)


class GLMAttention(nn.Module):
    """Self-attention over a fused per-head query/key/value projection, with vLLM's prefix-LM attention (the prefill
    runs non-causally, decode steps see the whole cache)."""

    def __init__(
        self,
        settings: GLMSettings,
        cache_config: CacheConfig | None,
        quant_config: QuantizationConfig | None,
        prefix: str,
    ):
        super().__init__()
        tp_size = get_tensor_model_parallel_world_size()
        if settings.num_heads % tp_size:
            raise ValueError(
                f"tensor_parallel_size={tp_size} must divide the model's {settings.num_heads} attention heads; pick a "
                "tensor-parallel size that does."
            )
        self.num_heads = settings.num_heads // tp_size
        self.head_dim = settings.head_dim
        self.scale = self.head_dim**-0.5
        self.query_key_value = ColumnParallelLinear(
            settings.hidden_size,
            3 * settings.hidden_size,
            bias=settings.qkv_bias,
            quant_config=quant_config,
            prefix=f"{prefix}.query_key_value",
        )
        self.dense = RowParallelLinear(
            settings.hidden_size, settings.hidden_size, bias=True, quant_config=quant_config, prefix=f"{prefix}.dense"
        )
        self.attn = PrefillPrefixLMAttention(
            self.num_heads,
            self.head_dim,
            self.scale,
            cache_config=cache_config,
            quant_config=quant_config,
            prefix=f"{prefix}.attn",
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor] | None,
        spans: list[PrefillSpan],
    ) -> torch.Tensor:
        qkv, _ = self.query_key_value(hidden_states)
        query, key, value = qkv.view(-1, self.num_heads, 3, self.head_dim).unbind(dim=2)
        if rotary is not None:
            cos, sin = rotary
            query = query * cos + rotate_half_pairs(query) * sin
            key = key * cos + rotate_half_pairs(key) * sin
        query, key, value = (t.reshape(-1, self.num_heads * self.head_dim) for t in (query, key, value))
        output = self.attn(query, key, value)
        for span in spans:
            output[span.start : span.end] = self._glm_layout_attention(query, key, value, span)
        output, _ = self.dense(output)
        return output

    def _glm_layout_attention(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, span: PrefillSpan
    ) -> torch.Tensor:
        """Attention of one prefill under GLM's mask: a key is visible if it is in Part A or not after the query.
        Chunked prefill and prefix caching are off for non-causal models, so all its keys are in this step."""
        rows = slice(span.start, span.end)
        q, k, v = (t[rows].view(-1, self.num_heads, self.head_dim).transpose(0, 1) for t in (query, key, value))
        length = span.end - span.start
        index = torch.arange(length, device=query.device)
        visible = (index[None, :] <= index[:, None]) | (index[None, :] < span.sep)
        out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=visible, scale=self.scale)
        return out.transpose(0, 1).reshape(length, -1)


class GLMMLP(nn.Module):
    """`act(x W1) W2`, or GeGLU `(x1 * act(x2)) W2` over the `[value | gate]` halves of `x W1`."""

    def __init__(self, settings: GLMSettings, quant_config: QuantizationConfig | None, prefix: str):
        super().__init__()
        self.use_glu = settings.use_glu
        hidden, inner = settings.hidden_size, settings.intermediate_size
        if self.use_glu:
            self.dense_h_to_4h = MergedColumnParallelLinear(
                hidden, [inner, inner], bias=True, quant_config=quant_config, prefix=f"{prefix}.dense_h_to_4h"
            )
        else:
            self.dense_h_to_4h = ColumnParallelLinear(
                hidden, inner, bias=True, quant_config=quant_config, prefix=f"{prefix}.dense_h_to_4h"
            )
        self.dense_4h_to_h = RowParallelLinear(
            inner, hidden, bias=True, quant_config=quant_config, prefix=f"{prefix}.dense_4h_to_h"
        )
        self.act = get_act_fn(settings.hidden_act)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states, _ = self.dense_h_to_4h(hidden_states)
        if self.use_glu:
            value, gate = hidden_states.chunk(2, dim=-1)
            hidden_states = value * self.act(gate)
        else:
            hidden_states = self.act(hidden_states)
        hidden_states, _ = self.dense_4h_to_h(hidden_states)
        return hidden_states


class GLMBlock(nn.Module):
    """One layer. Pre-LN: `x + f(LN(x))`. Post-LN (DeepNorm, ChatGLM-6B): `alpha * LN(x) + f(LN(x))`."""

    def __init__(
        self,
        settings: GLMSettings,
        cache_config: CacheConfig | None,
        quant_config: QuantizationConfig | None,
        prefix: str,
    ):
        super().__init__()
        self.pre_norm = settings.pre_layernorm
        self.alpha = settings.residual_alpha
        self.input_layernorm = LayerNorm(settings.hidden_size, eps=settings.layer_norm_eps)
        self.attention = GLMAttention(settings, cache_config, quant_config, prefix=f"{prefix}.attention")
        self.post_attention_layernorm = LayerNorm(settings.hidden_size, eps=settings.layer_norm_eps)
        self.mlp = GLMMLP(settings, quant_config, prefix=f"{prefix}.mlp")

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor] | None,
        spans: list[PrefillSpan],
    ) -> torch.Tensor:
        normed = self.input_layernorm(hidden_states)
        attention = self.attention(normed, rotary, spans)
        residual = hidden_states if self.pre_norm else normed * self.alpha
        hidden_states = residual + attention
        normed = self.post_attention_layernorm(hidden_states)
        residual = hidden_states if self.pre_norm else normed * self.alpha
        return residual + self.mlp(normed)
