"""An independent GLM forward written from the papers, used to check the model's math.

It reads the model's weights but none of its code: the mask is built with Python loops from the Part A length,
the 2D positions are passed in explicitly, and attention is plain softmax(QK^T / sqrt(d)) V per head.
"""

import math

import torch
import torch.nn.functional as F


def reference_mask(sep: int, n: int) -> torch.Tensor:
    return torch.tensor([[k < sep or k <= q for k in range(n)] for q in range(n)])


def rotate(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """GPT-NeoX style rotary over the whole vector x [seq, dim] with the given positions."""
    dim = x.shape[-1]
    inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = positions.double()[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    x1, x2 = x[..., : dim // 2], x[..., dim // 2 :]
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * angles.cos() + rotated * angles.sin()


def reference_logits(model, input_ids: list[int], positions: list[int], blocks: list[int], sep: int) -> torch.Tensor:
    """Logits [seq, vocab] in float64 for one unpadded sequence."""
    config = model.config
    sd = {k: v.double() for k, v in model.state_dict().items()}
    n, heads, d = len(input_ids), config.num_attention_heads, config.head_dim
    pos, blk = torch.tensor(positions), torch.tensor(blocks)
    x = sd["glm.word_embeddings.weight"][torch.tensor(input_ids)]
    if config.position_encoding == "learned_2d":
        x = x + sd["glm.position_embeddings.weight"][pos] + sd["glm.block_position_embeddings.weight"][blk]
    allowed = reference_mask(sep, n)
    alpha = math.sqrt(2 * config.num_hidden_layers)

    def layer_norm(h, name):
        return F.layer_norm(h, (h.shape[-1],), sd[name + ".weight"], sd[name + ".bias"], config.layer_norm_eps)

    def linear(h, name):
        return h @ sd[name + ".weight"].T + sd.get(name + ".bias", 0)

    for i in range(config.num_hidden_layers):
        p = f"glm.layers.{i}."
        h = layer_norm(x, p + "input_layernorm")
        qkv = linear(h, p + "attention.query_key_value").view(n, heads, 3, d)
        outs = []
        for head in range(heads):
            q, k, v = qkv[:, head, 0], qkv[:, head, 1], qkv[:, head, 2]
            if config.position_encoding == "rotary_2d":
                half = d // 2
                q = torch.cat(
                    [rotate(q[:, :half], pos, config.rope_theta), rotate(q[:, half:], blk, config.rope_theta)], -1
                )
                k = torch.cat(
                    [rotate(k[:, :half], pos, config.rope_theta), rotate(k[:, half:], blk, config.rope_theta)], -1
                )
            scores = (q @ k.T) / math.sqrt(d)
            scores = scores.masked_fill(~allowed, float("-inf"))
            outs.append(scores.softmax(-1) @ v)
        attn = linear(torch.cat(outs, dim=-1), p + "attention.dense")
        x = (x if config.layernorm_style == "pre" else alpha * h) + attn
        h = layer_norm(x, p + "post_attention_layernorm")
        up = linear(h, p + "mlp.dense_h_to_4h")
        if config.use_glu:
            a, gate = up.chunk(2, dim=-1)
            act = a * F.gelu(gate, approximate="tanh")
        else:
            act = F.gelu(up, approximate="tanh")
        mlp = linear(act, p + "mlp.dense_4h_to_h")
        x = (x if config.layernorm_style == "pre" else alpha * h) + mlp
    x = layer_norm(x, "glm.final_layernorm")
    head = sd["glm.word_embeddings.weight"] if config.tie_word_embeddings else sd["lm_head.weight"]
    return x @ head.T
