"""transformers' own common model and config tests (`ModelTesterMixin`, `ConfigTester`) run against GLM.

The test files come from the source distribution of the installed transformers release, which `.ci/run` downloads
and points `GLM_HF_TRANSFORMERS_TESTS` at (its `tests/` folder); nothing of them is copied into this repository.
Their own imports of files the source distribution does not ship (`tests/generation/test_utils.py`,
`tests/exporters/test_export.py`, `tests/utils/test_configuration_utils.py`) get the small stand-ins below, so the
generation and export mixins are simply absent; GLM's generation is covered by its own tests. Every skip says why.
"""

import importlib.util
import os
import sys
import types
import unittest

import pytest
import torch

from glm_hf import GLMConfig, GLMForCausalLM, GLMForConditionalGeneration, GLMModel
from tests.helpers.tiny import tiny_config

TESTS_DIR = os.environ.get("GLM_HF_TRANSFORMERS_TESTS")
if not TESTS_DIR:
    if os.environ.get("CI"):
        pytest.fail("GLM_HF_TRANSFORMERS_TESTS is not set: CI must run transformers' common tests (see .ci/run).")
    pytest.skip("set GLM_HF_TRANSFORMERS_TESTS to the tests/ folder of transformers' sdist", allow_module_level=True)

PACKAGE = "transformers_common_tests"


def _stand_in(name: str, **members) -> None:
    module = types.ModuleType(f"{PACKAGE}.{name}")
    module.__dict__.update(members)
    sys.modules[module.__name__] = module


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"{PACKAGE}.{name}", os.path.join(TESTS_DIR, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


package = types.ModuleType(PACKAGE)
package.__path__ = [TESTS_DIR]
sys.modules[PACKAGE] = package
for subpackage in ("exporters", "generation", "utils"):
    _stand_in(subpackage)
_stand_in("exporters.test_export", ExportTesterMixin=type("ExportTesterMixin", (), {}))
_stand_in("generation.test_utils", GenerationTesterMixin=type("GenerationTesterMixin", (), {}))
# Base-config keyword arguments with non-default values, for ConfigTester.check_config_arguments_init.
_stand_in(
    "utils.test_configuration_utils",
    config_common_kwargs={
        "return_dict": False,
        "output_hidden_states": True,
        "dtype": "float16",
        "chunk_size_feed_forward": 5,
        "architectures": ["GLMForCausalLM"],
        "id2label": {0: "negative", 1: "positive"},
        "label2id": {"negative": 0, "positive": 1},
        "problem_type": "single_label_classification",
    },
)
common = _load("test_modeling_common")
# The mixin decides what each class is (base model, causal LM, seq2seq LM: which labels it takes, whether it trains)
# by transformers' built-in name tables; its own copies of them also name GLM's classes. Nothing global changes.
for table, class_name in (
    ("MODEL_MAPPING_NAMES", "GLMModel"),
    ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "GLMForCausalLM"),
    ("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", "GLMForConditionalGeneration"),
):
    setattr(common, table, {**getattr(common, table), GLMConfig.model_type: class_name})
ModelTesterMixin = common.ModelTesterMixin
ConfigTester = _load("test_configuration_common").ConfigTester


class GLMModelTester:
    """Builds the small GLM and the plain-text inputs (`input_ids`, 2D padding mask) the common tests use."""

    def __init__(self, parent, batch_size: int = 3, seq_length: int = 7):
        self.parent = parent
        self.batch_size, self.seq_length = batch_size, seq_length
        self.is_training = True
        self.hidden_size, self.num_attention_heads, self.num_hidden_layers = 32, 4, 2
        self.expected_num_hidden_layers = self.num_hidden_layers + 1
        self.encoder_seq_length = seq_length

    def get_config(self) -> GLMConfig:
        return tiny_config()

    def prepare_config_and_inputs_for_common(self) -> tuple[GLMConfig, dict]:
        ids = torch.randint(9, 60, (self.batch_size, self.seq_length))
        mask = torch.ones_like(ids)
        mask[0, :2] = 0  # one left-padded row
        return self.get_config(), {"input_ids": ids, "attention_mask": mask}


# Tests that assume something GLM deliberately does differently, or that need what this setup lacks.
SKIPS = {
    "test_generation_tester_mixin_inheritance": (
        "GenerationTesterMixin lives in tests/generation/, which the sdist does not ship; GLM's generation has its "
        "own tests (test_generation.py, test_causal_lm.py)"
    ),
}


class GLMCommonModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (GLMModel, GLMForCausalLM, GLMForConditionalGeneration)

    def setUp(self):
        self.model_tester = GLMModelTester(self)
        self.config_tester = ConfigTester(self, config_class=GLMConfig, hidden_size=32, num_attention_heads=4)

    def test_config(self):
        self.config_tester.run_common_tests()


for _name, _reason in SKIPS.items():
    setattr(GLMCommonModelTest, _name, unittest.skip(_reason)(lambda self: None))
