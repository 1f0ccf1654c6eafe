"""The same GLM model behind `vllm serve` (glm-hf's vLLM plugin) and `glm-hf serve`: aggregate tokens/s and time to
first token for 1, 4 and 16 concurrent streaming chat clients, printed as one table.

The model is random (hidden 1024, 24 layers, 16 heads, fp32; the vocabulary is a small BPE's, so that every sampled
token decodes to text), built and saved with glm-hf.
vLLM and glm-hf need different transformers releases, so each server runs from its own environment:

    python benchmarks/bench_vllm.py --vllm-python /work/vllm-venv/bin/python --glm-hf-python /work/venv/bin/python

Every client sends `--requests` chat requests one after another (the same short conversation, greedy, `--max-tokens`
new tokens, streamed with usage); tokens/s is all completion tokens over the level's wall time, time to first token is
the median over requests from sending to the first streamed text. Both servers get one warm-up request first and run
with `OMP_WAIT_POLICY=PASSIVE` (see `main`). The chat template ends in `[gMASK] <|startofpiece|>`, so both read the
same GLM layout and no token is forced. `--profile` adds a torch-profiler table of vLLM's worker at 16 chats.
"""

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}Question: {{ message['content'] }}\n"
    "{% else %}Answer: {{ message['content'] }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Answer: [gMASK]<|startofpiece|>{% endif %}"
)
CONVERSATION = [
    {"role": "user", "content": "Tell me a long story about a king who lived in Paris, and what happened to his city."}
]
CLIENT_LEVELS = (1, 4, 16)


def make_folder(folder: Path, hidden: int, layers: int) -> None:
    """Saves the benchmark model (random weights) with glm-hf; runs under glm-hf's interpreter."""
    import torch

    from glm_hf import GLMConfig, GLMForConditionalGeneration, GLMTokenizer

    corpus = [CONVERSATION[0]["content"], "Question: Answer: once upon a time there was a city."] * 50
    tokenizer = GLMTokenizer.train_bpe(corpus, vocab_size=400, min_frequency=1)
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = GLMConfig(
        vocab_size=len(tokenizer),  # every id the random model samples must decode to text
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        max_position_embeddings=1024,
    )
    GLMForConditionalGeneration(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def profile_vllm(folder: Path, clients: int, max_tokens: int) -> None:
    """Where vLLM's worker spends a batch of `clients` concurrent chats (torch profiler, operators by self CPU time);
    runs under vLLM's interpreter."""
    from vllm import LLM, SamplingParams

    trace_dir = folder.parent / "vllm-profile"
    profiler = {"profiler": "torch", "torch_profiler_dir": str(trace_dir), "torch_profiler_with_stack": False}
    llm = LLM(
        model=str(folder),
        trust_remote_code=True,
        dtype="float32",
        max_model_len=1024,
        max_num_seqs=16,
        profiler_config=profiler,
    )
    params = SamplingParams(temperature=0, max_tokens=max_tokens)
    llm.chat([CONVERSATION] * clients, params, use_tqdm=False)  # warm-up
    llm.start_profile()
    started = time.perf_counter()
    outputs = llm.chat([CONVERSATION] * clients, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    llm.stop_profile()
    tokens = sum(len(output.outputs[0].token_ids) for output in outputs)
    print(f"\nvLLM offline, {clients} chats at once: {tokens / seconds:.1f} tok/s (profiled); worker operators:")
    for table in sorted(trace_dir.glob("*profiler_out*.txt")):
        print("\n".join(table.read_text().splitlines()[:24]))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], port: int, log: Path, env: dict[str, str], timeout: float = 900.0) -> subprocess.Popen:
    """Starts a server and waits until its /health answers."""
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[:3]} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return process
        except OSError:
            time.sleep(1)
    process.kill()
    raise RuntimeError(f"{command[:3]} did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


async def one_request(client, max_tokens: int) -> tuple[float, int]:
    """Seconds to the first streamed text, and completion tokens."""
    sent = time.perf_counter()
    first, tokens = None, 0
    stream = await client.chat.completions.create(
        model="bench",
        messages=CONVERSATION,
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - sent
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    if first is None or tokens == 0:
        raise RuntimeError("a request streamed no text; the measurement would be meaningless")
    return first, tokens


async def level(base_url: str, clients: int, requests: int, max_tokens: int) -> tuple[float, float]:
    """Aggregate completion tokens/s and median time to first token with `clients` concurrent clients."""
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=base_url, api_key="unused", timeout=3600) as client:

        async def user() -> list[tuple[float, int]]:
            return [await one_request(client, max_tokens) for _ in range(requests)]

        started = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(user() for _ in range(clients))) for r in rs]
        wall = time.perf_counter() - started
    return sum(tokens for _, tokens in results) / wall, statistics.median(ttft for ttft, _ in results)


def measure(name: str, command: list[str], port: int, work: Path, env: dict[str, str], args) -> dict:
    process = start(command, port, work / f"{name}.log", env)
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        asyncio.run(level(base_url, 1, 1, 16))  # warm-up
        rows = {}
        for clients in CLIENT_LEVELS:
            rows[clients] = asyncio.run(level(base_url, clients, args.requests, args.max_tokens))
            print(f"  {name}: {clients:>2} clients {rows[clients][0]:8.1f} tok/s, TTFT {rows[clients][1]:.2f} s")
        return rows
    finally:
        process.terminate()
        process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vllm-python", required=True, help="python of the environment with vLLM and the plugin")
    parser.add_argument("--glm-hf-python", required=True, help="python of the environment with glm-hf")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--requests", type=int, default=2, help="requests per client per level")
    parser.add_argument("--profile", action="store_true", help="also profile vLLM's worker at 16 concurrent chats")
    parser.add_argument("--make-folder", type=Path, help=argparse.SUPPRESS)  # internal: runs under glm-hf's python
    parser.add_argument("--profile-folder", type=Path, help=argparse.SUPPRESS)  # internal: runs under vLLM's python
    args = parser.parse_args()
    if args.make_folder:
        make_folder(args.make_folder, args.hidden, args.layers)
        return
    if args.profile_folder:
        profile_vllm(args.profile_folder, CLIENT_LEVELS[-1], args.max_tokens)
        return

    work = Path(tempfile.mkdtemp(prefix="bench_vllm_"))
    folder = work / "glm-bench"
    size = ["--hidden", str(args.hidden), "--layers", str(args.layers)]
    subprocess.run(
        [args.glm_hf_python, str(Path(__file__).resolve()), *sys.argv[1:], *size, "--make-folder", str(folder)],
        check=True,
        cwd=work,
    )
    # vLLM's CPU settings for a small shared machine, and passive OpenMP waiting for both servers: vLLM runs its API
    # server, engine core and worker as three processes, and OpenMP threads spinning at barriers on 2 cores starve the
    # other two (measured here: 51 tok/s at 16 clients with spinning, 103 passive).
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    glm_port, vllm_port = free_port(), free_port()
    glm_hf = [args.glm_hf_python, "-c", "from glm_hf.cli import main; main()", "serve", str(folder)]
    glm_hf += ["--port", str(glm_port), "--model-name", "bench", "--max-batch-size", "16", "--max-tokens", "1024"]
    vllm = [args.vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder), "--port"]
    vllm += [str(vllm_port), "--served-model-name", "bench", "--trust-remote-code", "--dtype", "float32"]
    vllm += ["--max-model-len", "1024", "--max-num-seqs", "16"]
    results = {
        "glm-hf serve": measure("glm-hf", glm_hf, glm_port, work, env, args),
        "vllm serve": measure("vllm", vllm, vllm_port, work, env, args),
    }
    print(f"\nGLM hidden {args.hidden}, {args.layers} layers, fp32, {args.max_tokens} new tokens per request, "
          f"{args.requests} requests per client")  # fmt: skip
    print("| clients | glm-hf serve tok/s | vllm serve tok/s | vLLM / glm-hf | glm-hf TTFT s | vLLM TTFT s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for clients in CLIENT_LEVELS:
        (g_tps, g_ttft), (v_tps, v_ttft) = results["glm-hf serve"][clients], results["vllm serve"][clients]
        print(f"| {clients} | {g_tps:.1f} | {v_tps:.1f} | {v_tps / g_tps:.2f}x | {g_ttft:.2f} | {v_ttft:.2f} |")
    if args.profile:
        own = [a for a in sys.argv[1:] if a != "--profile"]
        command = [args.vllm_python, str(Path(__file__).resolve()), *own, "--profile-folder", str(folder)]
        subprocess.run(command, check=True, cwd=work, env=env)


if __name__ == "__main__":
    main()
