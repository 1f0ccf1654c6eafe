"""Aggregate throughput of `glm-hf serve` under 1, 4 and 16 concurrent streaming clients against serving the same
requests one at a time, plus first-token latency; one run, printed as a table.

The model is a random GLM of 4 layers, hidden 256, on the demo tokenizer (fp32, CPU), served by a real
`glm-hf serve` subprocess; clients are the official `openai` client in threads. Every request asks for 32 greedy
tokens and its usage gives the tokens generated. Run alone on the machine.
"""

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import torch

from glm_hf import GLMConfig, GLMForConditionalGeneration
from glm_hf.demo.run import load_demo_tokenizer

NEW_TOKENS = 32
QUESTIONS = ["the capital of france ?", "what is the capital of japan ?", "hello", "how are you ?"]


class ChatServer:
    """A `glm-hf serve` subprocess on a free local port (a real server: uvicorn, the CLI, the engine thread)."""

    API_KEY = "bench-key"

    def __init__(self, folder: Path, log_path: Path, *options: str):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_path, "w")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        command = [sys.executable, "-m", "glm_hf.cli", "serve", str(folder), "--port", str(self.port)]
        command += ["--model-name", "tiny-chatglm", "--api-key", self.API_KEY, *options]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/health", timeout=1)
                return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"glm-hf serve did not start: {open(log_path).read()[-3000:]}")

    def client(self, **options) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=self.API_KEY, max_retries=0, **options)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)
        self.log.close()


def model_folder(folder: Path) -> Path:
    tokenizer = load_demo_tokenizer()
    torch.manual_seed(0)
    # No stop token: every request generates all NEW_TOKENS.
    config = GLMConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=256,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        eop_token_id=None,
        eos_token_id=None,
    )
    GLMForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def one_request(client, index: int) -> tuple[float, float, int]:
    """(seconds to the first token, seconds in all, tokens generated) of one streaming chat request."""
    start, first, tokens = time.perf_counter(), None, 0
    stream = client.chat.completions.create(
        model="tiny-chatglm",
        messages=[{"role": "user", "content": QUESTIONS[index % len(QUESTIONS)] + f" {index}"}],
        max_tokens=NEW_TOKENS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return first or 0.0, time.perf_counter() - start, tokens


def run(client, clients: int, requests: int) -> tuple[float, float]:
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda i: one_request(client, i), range(requests)))
    elapsed = time.perf_counter() - start
    return sum(r[2] for r in results) / elapsed, statistics.mean(r[0] for r in results)


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        folder = model_folder(Path(scratch) / "model")
        server = ChatServer(folder, Path(scratch) / "server.log", "--max-tokens", str(NEW_TOKENS))
        try:
            client = server.client(timeout=600)
            run(client, 1, 2)  # warm-up
            rows = []
            for clients in (1, 4, 16):
                alone, alone_latency = run(client, 1, clients * 2)
                together, latency = run(client, clients, clients * 2)
                rows.append((clients, alone, together, together / alone, alone_latency, latency))
        finally:
            server.stop()
    print(
        f"{'clients':>7} | {'one at a time tok/s':>19} | {'concurrent tok/s':>16} | {'ratio':>5} | "
        f"{'first token alone':>17} | {'first token concurrent':>22}"
    )
    for clients, alone, together, ratio, alone_latency, latency in rows:
        print(
            f"{clients:>7} | {alone:>19.1f} | {together:>16.1f} | {ratio:>5.2f} | {alone_latency * 1000:>14.0f} ms | "
            f"{latency * 1000:>19.0f} ms"
        )


if __name__ == "__main__":
    main()
