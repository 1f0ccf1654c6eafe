"""glm-hf: GLM (autoregressive blank infilling) as a native HuggingFace Transformers model.

Importing this package registers GLM's config, every head and the tokenizer with the Auto classes
(`model_type="glm_hf"`), GLM's pipelines and quantizer, and hands the model code what only the package can do:
converting THUDM folders on load and writing filled model cards on save.
"""

import transformers
from transformers import AutoConfig, AutoTokenizer

from .convert.checkpoint import convert_checkpoint
from .cpu_packing import pack_for_cpu
from .demo import corpus
from .model import blank_infilling
from .model.configuration_glm import GLMConfig
from .model.hub_glm import GLMHubMixin, PackageServices
from .model.modeling_glm import (
    AUTO_CLASSES,
    GLMForCausalLM,
    GLMForConditionalGeneration,
    GLMForMultipleChoice,
    GLMForSequenceClassification,
    GLMModel,
    GLMPreTrainedModel,
)
from .model.quantization import GLMQuantizationConfig, quantize
from .model.tokenization_glm import GLMTokenizer
from .model_card import write_model_card
from .pipelines import register_pipelines

__version__ = "0.1.0"


def _write_card(folder: str, parameters: int) -> None:
    write_model_card(folder, parameters=parameters, save_info=False)


def _convert_thudm(source: str, destination: str) -> str:
    return str(convert_checkpoint(source, destination, require_tokenizer=False))


def _register() -> None:
    AutoConfig.register(GLMConfig.model_type, GLMConfig, exist_ok=True)
    for auto_class, head in AUTO_CLASSES.items():
        getattr(transformers, auto_class).register(GLMConfig, head, exist_ok=True)
    AutoTokenizer.register(GLMConfig, tokenizer_class=GLMTokenizer, exist_ok=True)
    GLMHubMixin.package_services = PackageServices(write_model_card=_write_card, convert_thudm=_convert_thudm)


_register()
register_pipelines()

__all__ = [
    "GLMConfig",
    "GLMModel",
    "GLMPreTrainedModel",
    "GLMForCausalLM",
    "GLMForConditionalGeneration",
    "GLMForMultipleChoice",
    "GLMForSequenceClassification",
    "GLMQuantizationConfig",
    "GLMTokenizer",
    "quantize",
    "pack_for_cpu",
    "blank_infilling",
    "corpus",
]
