"""Second environments the suite needs for some tests."""

import os

import pytest


def other_python() -> str:
    """The interpreter of a second environment with another transformers release (`.ci/run` sets
    GLM_HF_OTHER_PYTHON: the minimum release for the newest suite and the other way round). Cross-version tests
    skip without it locally, and fail in CI, where it must be set."""
    python = os.environ.get("GLM_HF_OTHER_PYTHON")
    if not python:
        if os.environ.get("CI"):
            pytest.fail("GLM_HF_OTHER_PYTHON is not set: CI must run the cross-version tests (see .ci/run).")
        pytest.skip("set GLM_HF_OTHER_PYTHON to a Python whose environment has another transformers release")
    return python
