"""Tiny random checkpoints in THUDM's format: GLM and ChatGLM-6B `config.json` contents and state dicts with
their exact keys and shapes (the inputs of the conversion tests and of `chatglm_folder`)."""

import torch

GLM_CONFIG = {
    "model_type": "glm",
    "num_layers": 2,
    "vocab_size": 50304,
    "hidden_size": 32,
    "num_attention_heads": 4,
    "max_sequence_length": 64,
    "embedding_dropout_prob": 0.1,
    "attention_dropout_prob": 0.1,
    "output_dropout_prob": 0.1,
    "checkpoint_activations": False,
    "checkpoint_num_layers": 1,
    "parallel_output": True,
    "relative_encoding": False,
    "block_position_encoding": True,
    "output_predict": True,
    "spell_length": None,
    "spell_func": "lstm",
    "attention_scale": 1.0,
    "architectures": ["GLMModel"],
}
CHATGLM_CONFIG = {
    "model_type": "chatglm",
    "architectures": ["ChatGLMModel"],
    "num_layers": 3,
    "vocab_size": 300,
    "hidden_size": 64,
    "inner_hidden_size": 96,
    "num_attention_heads": 4,
    "layernorm_epsilon": 1e-5,
    "max_sequence_length": 64,
    "position_encoding_2d": True,
    "mask_token_id": 250,
    "gmask_token_id": 251,
    "bos_token_id": 254,
    "eos_token_id": 255,
    "pad_token_id": 3,
    "use_cache": True,
}


def layer_shapes(prefix: str, hidden: int, inner: int) -> dict[str, tuple[int, ...]]:
    """One THUDM transformer layer's keys and shapes (GLM and ChatGLM-6B name them alike)."""
    return {
        f"{prefix}.input_layernorm.weight": (hidden,),
        f"{prefix}.input_layernorm.bias": (hidden,),
        f"{prefix}.attention.query_key_value.weight": (3 * hidden, hidden),
        f"{prefix}.attention.query_key_value.bias": (3 * hidden,),
        f"{prefix}.attention.dense.weight": (hidden, hidden),
        f"{prefix}.attention.dense.bias": (hidden,),
        f"{prefix}.post_attention_layernorm.weight": (hidden,),
        f"{prefix}.post_attention_layernorm.bias": (hidden,),
        f"{prefix}.mlp.dense_h_to_4h.weight": (inner, hidden),
        f"{prefix}.mlp.dense_h_to_4h.bias": (inner,),
        f"{prefix}.mlp.dense_4h_to_h.weight": (hidden, inner),
        f"{prefix}.mlp.dense_4h_to_h.bias": (hidden,),
    }


def glm_state(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict with THUDM GLM's keys and shapes."""
    g = torch.Generator().manual_seed(seed)
    h, rows = config["hidden_size"], config["max_sequence_length"] + 1
    shapes = {
        "word_embeddings.weight": (config["vocab_size"], h),
        "transformer.position_embeddings.weight": (rows, h),
        "transformer.block_position_embeddings.weight": (rows, h),
        "transformer.final_layernorm.weight": (h,),
        "transformer.final_layernorm.bias": (h,),
    }
    for i in range(config["num_layers"]):
        shapes |= layer_shapes(f"transformer.layers.{i}", h, 4 * h)
    return {key: _random(shape, key, g) for key, shape in shapes.items()}


def chatglm_state(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict with ChatGLM-6B's keys and shapes (rotary buffers included, as THUDM saves them)."""
    g = torch.Generator().manual_seed(seed)
    h, inner = config["hidden_size"], config["inner_hidden_size"]
    d = h // config["num_attention_heads"]
    shapes = {
        "transformer.word_embeddings.weight": (config["vocab_size"], h),
        "transformer.final_layernorm.weight": (h,),
        "transformer.final_layernorm.bias": (h,),
        "lm_head.weight": (config["vocab_size"], h),
    }
    for i in range(config["num_layers"]):
        shapes |= layer_shapes(f"transformer.layers.{i}", h, inner)
    state = {key: _random(shape, key, g) for key, shape in shapes.items()}
    for i in range(config["num_layers"]):
        state[f"transformer.layers.{i}.attention.rotary_emb.inv_freq"] = torch.rand(d // 4, generator=g).half()
    return state


def _random(shape: tuple[int, ...], key: str, g: torch.Generator) -> torch.Tensor:
    if "layernorm" in key:
        return (1.0 if key.endswith("weight") else 0.0) + 0.1 * torch.randn(shape, generator=g)
    return 0.3 * torch.randn(shape, generator=g)
