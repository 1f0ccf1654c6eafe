"""glm-hf: GLM (autoregressive blank infilling) as a native HuggingFace Transformers model.

Importing this package registers GLM's config, models and tokenizer with the Auto classes (`model_type="glm_hf"`).
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMultipleChoice,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from .demo import corpus
from .model import blank_infilling
from .model.configuration_glm import GLMConfig
from .model.modeling_glm import (
    GLMForCausalLM,
    GLMForConditionalGeneration,
    GLMForMultipleChoice,
    GLMForSequenceClassification,
    GLMModel,
    GLMPreTrainedModel,
)
from .model.quantization import GLMQuantizationConfig, quantize
from .model.tokenization_glm import GLMTokenizer
from .pipelines import register_pipelines

__version__ = "0.1.0"


def _register() -> None:
    AutoConfig.register(GLMConfig.model_type, GLMConfig, exist_ok=True)
    AutoModel.register(GLMConfig, GLMModel, exist_ok=True)
    AutoModelForCausalLM.register(GLMConfig, GLMForCausalLM, exist_ok=True)
    AutoModelForSeq2SeqLM.register(GLMConfig, GLMForConditionalGeneration, exist_ok=True)
    AutoModelForMultipleChoice.register(GLMConfig, GLMForMultipleChoice, exist_ok=True)
    AutoModelForSequenceClassification.register(GLMConfig, GLMForSequenceClassification, exist_ok=True)
    AutoTokenizer.register(GLMConfig, tokenizer_class=GLMTokenizer, exist_ok=True)


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
    "blank_infilling",
    "corpus",
]
