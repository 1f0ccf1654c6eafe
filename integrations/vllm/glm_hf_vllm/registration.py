"""What the `vllm.general_plugins` entry point runs: the GLM architectures in vLLM's model registry, the config hook
that turns on per-request positions (M-RoPE rows) for them, and the renderer refusing prompts GLM cannot lay out."""

from typing import Any

# The `architectures` glm-hf writes into config.json (its heads' class names; converted THUDM GLM and ChatGLM-6B
# folders carry `GLMForConditionalGeneration`).
ARCHITECTURES = {
    "GLMForConditionalGeneration": "glm_hf_vllm.model:GLMForConditionalGeneration",
    "GLMForCausalLM": "glm_hf_vllm.model:GLMForCausalLM",
}


# Tokenizer and renderer mode of GLM folders: Hugging Face tokenization, plus the layout check of `renderer.py`.
RENDERER_MODE = "glm_hf"


class GLMConfigHook:
    """vLLM's per-architecture config hook (`MODELS_CONFIG_MAP`), run where the config is made:

    - declares M-RoPE rows in the config's rope parameters (in memory; the folder is not changed), which is how vLLM
      lets a model compute each request's positions itself (`SupportsMRoPE.get_mrope_input_positions`); the rows
      carry GLM's encoded 2D positions (see `layout.py`), not rotary sections;
    - picks the `glm_hf` tokenizer mode when the user left it `auto`: Hugging Face tokenization with the renderer
      that refuses prompts without a blank (`renderer.GLMRenderer`).
    """

    @staticmethod
    def verify_and_update_model_config(model_config: Any) -> None:
        config = model_config.hf_config
        rope = dict(getattr(config, "rope_parameters", None) or {})
        rope.setdefault("rope_type", "default")
        rope["mrope_section"] = [1, 1, 1]
        config.rope_parameters = rope
        if model_config.tokenizer_mode == "auto":
            model_config.tokenizer_mode = RENDERER_MODE

    @staticmethod
    def verify_and_update_config(vllm_config: Any) -> None:
        """Part of vLLM's hook interface; GLM needs nothing beyond the model config."""


def register() -> None:
    """Registers the GLM architectures (idempotent; vLLM calls it once per process)."""
    from vllm import ModelRegistry
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP
    from vllm.renderers.registry import RENDERER_REGISTRY
    from vllm.tokenizers.registry import TokenizerRegistry

    supported = set(ModelRegistry.get_supported_archs())
    for architecture, target in ARCHITECTURES.items():
        if architecture not in supported:
            ModelRegistry.register_model(architecture, target)
        MODELS_CONFIG_MAP.setdefault(architecture, GLMConfigHook)
    if RENDERER_MODE not in TokenizerRegistry.tokenizers:
        TokenizerRegistry.register(RENDERER_MODE, *TokenizerRegistry.tokenizers["hf"])
    if RENDERER_MODE not in RENDERER_REGISTRY.renderers:
        RENDERER_REGISTRY.register(RENDERER_MODE, "glm_hf_vllm.renderer", "GLMRenderer")
