"""Refuses, where requests enter (API server or `LLM`), a prompt GLM cannot lay out, with a message that says how to
fix it: an OpenAI client gets HTTP 400 instead of an empty answer.

The renderer is vLLM's Hugging Face one (chat templates, tokenization) plus this check; the plugin makes it the
default for GLM folders (tokenizer mode `glm_hf`, set by `registration.GLMConfigHook` when the mode is `auto`).
"""

from collections.abc import Sequence

from vllm.config import VllmConfig
from vllm.exceptions import VLLMValidationError
from vllm.renderers.hf import HfRenderer
from vllm.tokenizers.hf import HfTokenizer

from .layout import LayoutError, prompt_layout
from .settings import GLMSettings


class GLMRenderer(HfRenderer):
    """vLLM's `HfRenderer` that also checks every prompt's GLM layout (a blank before `<|startofpiece|>`, one blank
    per span)."""

    def __init__(self, config: VllmConfig, tokenizer: HfTokenizer | None) -> None:
        super().__init__(config, tokenizer)
        self.glm_settings = GLMSettings.from_hf_config(config.model_config.hf_config)

    def validate_token_ids(self, token_ids: Sequence[int], *, parameter: str | None = None) -> None:
        super().validate_token_ids(token_ids, parameter=parameter)
        try:
            prompt_layout(list(token_ids), self.glm_settings.layout_tokens, self.glm_settings.max_positions)
        except LayoutError as error:
            raise VLLMValidationError(str(error), parameter=parameter or "prompt") from error
