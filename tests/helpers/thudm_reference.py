"""THUDM's GLM and ChatGLM-6B forward passes, written from their published code's math directly on THUDM-format
state dicts (their key names, their query/key/value row order, their masks and scalings), independent of glm_hf.

- GLM (hub `modeling_glm.py`): word + position + block-position embeddings; pre-LN blocks; q/k/v split as
  `[Q | K | V]` rows; scores `q @ (k / sqrt(d))^T`, multiplied by a 0/1 mask, then masked to -65504; exact-erf GeLU;
  final LayerNorm; logits against the word embeddings.
- ChatGLM-6B (`modeling_chatglm.py` v1.1): rows per head `[q_h, k_h, v_h]`; 2D rotary (dims 0..d/2 rotate with
  the position, d/2..d with the block position, NeoX-style halves, float16-rounded frequencies); query divided by
  `sqrt(d) * (layer + 1)`, masked to -10000, scores multiplied by `layer + 1` in fp32; residuals
  `LN(x) * sqrt(56) + f(LN(x))`; tanh GeLU; separate `lm_head`. Positions and mask from `<sop>` and the first
  `[gMASK]` (else `[MASK]`) as `get_position_ids`/`get_masks` do.
"""

import math

import torch
import torch.nn.functional as F


def _layer_norm(x, state, prefix, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], state[f"{prefix}.weight"], state[f"{prefix}.bias"], eps)


def _linear(x, state, prefix):
    return F.linear(x, state[f"{prefix}.weight"], state.get(f"{prefix}.bias"))


def glm_forward(state, config, input_ids, position_ids, sep=None, mask=None):
    """THUDM GLM logits `[b, s, vocab]` for `input_ids` `[b, s]`, `position_ids` `[b, 2, s]`, and either Part A
    lengths `sep` or a 0/1 `mask` `[b, 1, s, s]` (THUDM's 4D form, used for multiple choice)."""
    heads, hidden = config["num_attention_heads"], config["hidden_size"]
    d = hidden // heads
    b, s = input_ids.shape
    x = F.embedding(input_ids, state["word_embeddings.weight"])
    x = x + F.embedding(position_ids[:, 0], state["transformer.position_embeddings.weight"])
    x = x + F.embedding(position_ids[:, 1], state["transformer.block_position_embeddings.weight"])
    if mask is None:
        mask = torch.ones(s, s).tril().expand(b, s, s).clone()
        for row in range(b):
            mask[row, :, : int(sep[row])] = 1
        mask = mask.unsqueeze(1)
    mask = mask.float()
    for i in range(config["num_layers"]):
        p = f"transformer.layers.{i}"
        h = _layer_norm(x, state, f"{p}.input_layernorm")
        q, k, v = _linear(h, state, f"{p}.attention.query_key_value").split(hidden, dim=-1)
        q, k, v = (t.view(b, s, heads, d).permute(0, 2, 1, 3) for t in (q, k, v))
        scores = torch.matmul(q, k.transpose(-1, -2) / math.sqrt(d))
        scores = scores * mask + (-65504.0) * (1.0 - mask)
        context = torch.matmul(scores.softmax(-1), v).permute(0, 2, 1, 3).reshape(b, s, hidden)
        x = x + _linear(context, state, f"{p}.attention.dense")
        h = _layer_norm(x, state, f"{p}.post_attention_layernorm")
        x = x + _linear(F.gelu(_linear(h, state, f"{p}.mlp.dense_h_to_4h")), state, f"{p}.mlp.dense_4h_to_h")
    x = _layer_norm(x, state, "transformer.final_layernorm")
    return F.linear(x, state["word_embeddings.weight"])


def chatglm_layout(input_ids, config):
    """ChatGLM's `get_position_ids` and `get_masks` (True = may attend) for rows that contain `<sop>`."""
    b, s = input_ids.shape
    positions = torch.arange(s).repeat(b, 1)
    blocks = torch.zeros(b, s, dtype=torch.long)
    mask = torch.ones(b, s, s).tril()
    for row, seq in enumerate(input_ids.tolist()):
        context = seq.index(config["bos_token_id"])
        blank = config["gmask_token_id"] if config["gmask_token_id"] in seq else config["mask_token_id"]
        positions[row, context:] = seq.index(blank)
        blocks[row, context:] = torch.arange(1, s - context + 1)
        mask[row, :, :context] = 1
    return torch.stack([positions, blocks], dim=1), mask.unsqueeze(1) > 0.5


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def _rotary(x, positions, inv_freq):
    angles = positions.float()[:, None, :, None] * inv_freq  # [b, 1, s, d/4]
    emb = torch.cat([angles, angles], dim=-1)
    return x * emb.cos() + _rotate_half(x) * emb.sin()


def chatglm_forward(state, config, input_ids):
    """ChatGLM-6B logits `[b, s, vocab]` for rows holding a blank and `<sop>` (positions and mask derived)."""
    heads, hidden = config["num_attention_heads"], config["hidden_size"]
    d = hidden // heads
    b, s = input_ids.shape
    position_ids, may_attend = chatglm_layout(input_ids, config)
    inv_freq = (1.0 / (10000 ** (torch.arange(0, d // 2, 2).float() / (d // 2)))).half().float()
    x = F.embedding(input_ids, state["transformer.word_embeddings.weight"])
    alpha = (2 * 28) ** 0.5
    eps = config["layernorm_epsilon"]
    for i in range(config["num_layers"]):
        p = f"transformer.layers.{i}"
        h = _layer_norm(x, state, f"{p}.input_layernorm", eps)
        qkv = _linear(h, state, f"{p}.attention.query_key_value").view(b, s, heads, 3 * d)
        q, k, v = (t.permute(0, 2, 1, 3) for t in qkv.split(d, dim=-1))
        q1, q2 = q.chunk(2, dim=-1)
        k1, k2 = k.chunk(2, dim=-1)
        q = torch.cat([_rotary(q1, position_ids[:, 0], inv_freq), _rotary(q2, position_ids[:, 1], inv_freq)], -1)
        k = torch.cat([_rotary(k1, position_ids[:, 0], inv_freq), _rotary(k2, position_ids[:, 1], inv_freq)], -1)
        coeff = float(i + 1)
        scores = torch.matmul(q / (math.sqrt(d) * coeff), k.transpose(-1, -2))
        scores = scores.masked_fill(~may_attend, -10000.0).float() * coeff
        context = torch.matmul(scores.softmax(-1), v).permute(0, 2, 1, 3).reshape(b, s, hidden)
        x = h * alpha + _linear(context, state, f"{p}.attention.dense")
        h = _layer_norm(x, state, f"{p}.post_attention_layernorm", eps)
        mlp = _linear(h, state, f"{p}.mlp.dense_h_to_4h")
        mlp = 0.5 * mlp * (1.0 + torch.tanh(0.7978845608028654 * mlp * (1.0 + 0.044715 * mlp * mlp)))
        x = h * alpha + _linear(mlp, state, f"{p}.mlp.dense_4h_to_h")
    x = _layer_norm(x, state, "transformer.final_layernorm", eps)
    return F.linear(x, state["lm_head.weight"])


def greedy(forward, input_ids, steps):
    """Greedy decoding by full recomputation: append the argmax of the last position `steps` times."""
    ids = input_ids
    for _ in range(steps):
        ids = torch.cat([ids, forward(ids)[:, -1].argmax(-1, keepdim=True)], dim=-1)
    return ids
