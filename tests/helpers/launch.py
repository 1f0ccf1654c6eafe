"""Launches a script on several local CPU processes with torchrun (gloo), as users launch distributed jobs."""

import os
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(
    script: Path | str, *args: str, nprocs: int = 2, timeout: int = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Runs `torchrun --nproc-per-node nprocs script args` offline with one thread per process (plus `env`); raises
    with the processes' output if the job fails."""
    offline = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env = {**os.environ, **offline, **(env or {})}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={nprocs}",
        "--master-addr=127.0.0.1",
        f"--master-port={free_port()}",
        str(script),
        *args,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result
