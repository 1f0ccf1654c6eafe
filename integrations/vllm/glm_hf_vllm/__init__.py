"""glm-hf's vLLM plugin: serves folders saved by glm-hf (GLM, GLM-130B-style, ChatGLM-6B-style) with `vllm serve`.

Installed next to vLLM, it is loaded by vLLM through the `vllm.general_plugins` entry point in every process (API
server, engine core, workers), where `register()` adds the GLM architectures to vLLM's model registry.
"""

from .registration import ARCHITECTURES, register

__all__ = ["ARCHITECTURES", "register"]
