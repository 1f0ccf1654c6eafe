"""Loading a saved folder the way a user without glm_hf does: in a separate, isolated interpreter."""

import os
import subprocess
import sys

import torch


def load_in_clean_process(script: str, folder, tmp_path):
    """Runs `script FOLDER OUT` in an isolated interpreter (`-I`, no PYTHONPATH, a fresh HF cache) and returns what
    it saved to OUT with `torch.save`."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    out = tmp_path / "out.pt"
    result = subprocess.run(
        [sys.executable, "-I", "-c", script, str(folder), str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out)
