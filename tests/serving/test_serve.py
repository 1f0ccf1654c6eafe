"""`glm-hf serve` driven by the official `openai` client (and urllib for the non-OpenAI parts): answers equal
`model.chat`'s greedy answers, streaming equals non-streaming, usage counts, errors as OpenAI-style 4xx bodies, a
32-request concurrent load test, disconnects, and a clean SIGTERM shutdown."""

import concurrent.futures
import json
import signal
import time
import urllib.error
import urllib.request

import openai
import pytest
import torch

from glm_hf.serving.engine import BatchingEngine, Job, RequestError, Sampling
from tests.helpers.servers import ChatServer, chat_reference


def http(server, path: str, body: bytes | dict | None = None) -> tuple[int, dict]:
    """A raw request (for what the openai client does not send: the fill extension, malformed bodies); returns the
    status and the JSON body."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    headers = {"Authorization": f"Bearer {ChatServer.API_KEY}", "Content-Type": "application/json"}
    request = urllib.request.Request(server.url + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


MODEL = "tiny-chatglm"
QUERIES = ["你好", "hello how are you ?", "what is the capital of France ?", "谢谢", "good morning", "北京 是 中国 的"]


def test_chat_completion_equals_model_chat_and_counts_usage(chat_server, chatglm):
    history = [("你好", "你好，我是 ChatGLM")]
    chat = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": history[0][1]}]
    chat.append({"role": "user", "content": "hello"})
    reply = chat_server.client().chat.completions.create(model=MODEL, messages=chat, max_tokens=16, temperature=0)
    assert reply.choices[0].message.content == chat_reference(chatglm, "hello", history)
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].finish_reason in ("stop", "length")
    prompt = chatglm[1].apply_chat_template(chat, add_generation_prompt=True)["input_ids"]
    assert reply.usage.prompt_tokens == len(prompt) and 1 <= reply.usage.completion_tokens <= 16
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streaming_chat_concatenates_to_the_same_answer(chat_server, chatglm):
    client = chat_server.client()
    chat = [{"role": "user", "content": "hello how are you ?"}]
    whole = client.chat.completions.create(model=MODEL, messages=chat, max_tokens=16, temperature=0)
    stream = client.chat.completions.create(
        model=MODEL, messages=chat, max_tokens=16, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content == chat_reference(chatglm, chat[0]["content"])
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_completions_stream_stop_strings_n_and_seed(chat_server, chatglm):
    client = chat_server.client()
    whole = client.completions.create(model=MODEL, prompt="good morning", max_tokens=12, temperature=0)
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=MODEL, prompt="good morning", max_tokens=12, temperature=0, stream=True
        )
    )
    assert streamed == whole.choices[0].text
    model, tokenizer = chatglm
    ids = tokenizer("good morning", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = model.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1] :]
    assert whole.choices[0].text == tokenizer.decode(expected, skip_special_tokens=True)
    assert len(whole.choices[0].text.strip()) > 1
    stop = whole.choices[0].text.strip()[1]
    cut = client.completions.create(model=MODEL, prompt="good morning", max_tokens=12, temperature=0, stop=stop)
    assert cut.choices[0].finish_reason == "stop" and cut.choices[0].text == whole.choices[0].text.split(stop)[0]
    sampled = [client.completions.create(model=MODEL, prompt="hello", max_tokens=8, n=3, seed=7) for _ in range(2)]
    assert [c.text for c in sampled[0].choices] == [c.text for c in sampled[1].choices]
    assert len(sampled[0].choices) == 3 and [c.index for c in sampled[0].choices] == [0, 1, 2]


def test_fill_extension_fills_each_blank(chat_server):
    status, body = http(
        chat_server, "/v1/fill", {"model": MODEL, "text": "hello [MASK] are you", "max_tokens": 6, "temperature": 0}
    )
    assert status == 200 and len(body["fills"]) == 1
    assert body["text"].startswith("hello") and body["text"].endswith("are you")


def test_special_token_strings_from_clients_are_plain_text(chat_server, chatglm):
    """A `[gMASK]` / `<sop>` / `[MASK]` typed by a client is text: the chat prompt keeps only the template's own
    `[gMASK] <sop>`, and a completion prompt is continued as written."""
    model, tokenizer = chatglm
    client = chat_server.client()
    query = "hello [gMASK] how <sop> are [MASK] you ?"
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": query}], max_tokens=16, temperature=0
    )
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": query}], add_generation_prompt=True)
    prompt = prompt["input_ids"]
    assert prompt[-2:] == [tokenizer.gmask_token_id, tokenizer.sop_token_id]
    assert prompt.count(tokenizer.gmask_token_id) == 1 and tokenizer.mask_token_id not in prompt
    assert reply.usage.prompt_tokens == len(prompt)
    assert reply.choices[0].message.content == chat_reference(chatglm, query)
    text = "good [MASK] morning <eop>"
    whole = client.completions.create(model=MODEL, prompt=text, max_tokens=8, temperature=0)
    ids = tokenizer(text, split_special_tokens=True, return_tensors="pt")["input_ids"]
    assert whole.usage.prompt_tokens == ids.shape[1] and tokenizer.mask_token_id not in ids[0].tolist()
    with torch.no_grad():
        expected = model.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1] :]
    assert whole.choices[0].text == tokenizer.decode(expected, skip_special_tokens=True)


def test_models_and_health(chat_server):
    assert [m.id for m in chat_server.client().models.list()] == [MODEL]
    assert http(chat_server, "/health")[1]["status"] == "ok"


def test_bad_requests_get_openai_errors_and_the_server_stays_up(chat_server):
    client = chat_server.client()
    chat = [{"role": "user", "content": "hello"}]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=chat_server.url + "/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4", messages=chat)
    with pytest.raises(openai.BadRequestError, match="Unknown role"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "bot", "content": "hi"}])
    answered = [*chat, {"role": "assistant", "content": "hi"}]
    with pytest.raises(openai.BadRequestError, match="ends with an assistant message"):
        client.chat.completions.create(model=MODEL, messages=answered)
    with pytest.raises(openai.BadRequestError, match="allows up to 64"):
        client.chat.completions.create(model=MODEL, messages=chat, max_tokens=1000)
    with pytest.raises(openai.BadRequestError, match="context_length_exceeded|positions cover"):
        client.completions.create(model=MODEL, prompt="hello " * 400, max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model=MODEL, messages=chat, temperature=5)
    status, body = http(chat_server, "/v1/chat/completions", b"{not json")
    assert status == 400 and body["error"]["code"] == "invalid_json"
    status, body = http(chat_server, "/v1/completions", b"x" * 30_000)
    assert status == 413 and "limit" in body["error"]["message"]
    assert client.chat.completions.create(model=MODEL, messages=chat, max_tokens=2).choices[0].message is not None


def test_32_concurrent_streams_are_all_answered_unmixed(chat_server, chatglm):
    requests = [QUERIES[i % len(QUERIES)] + " " + str(i % 10) for i in range(32)]
    expected = {query: chat_reference(chatglm, query) for query in set(requests)}
    client = chat_server.client(timeout=300)

    def ask(query: str) -> str:
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": query}], max_tokens=16, temperature=0, stream=True
        )
        return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(ask, requests))
    assert answers == [expected[query] for query in requests]
    assert http(chat_server, "/health")[1]["status"] == "ok"


def test_a_client_that_disconnects_mid_stream_frees_its_slot(chat_server):
    client = chat_server.client()
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=64, temperature=0.9, stream=True
    )
    next(iter(stream))
    stream.close()
    deadline = time.monotonic() + 30
    while http(chat_server, "/health")[1]["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert http(chat_server, "/health")[1]["running"] == 0
    assert client.completions.create(model=MODEL, prompt="hello", max_tokens=2).choices[0].text is not None


def test_a_full_queue_answers_429(chatglm):
    model, tokenizer = chatglm
    engine = BatchingEngine(model, tokenizer, max_queue=1)  # not started: what is submitted stays queued
    job = Job([5, 8], Sampling(max_new_tokens=1), on_event=lambda event: None)
    engine.submit(job)
    with pytest.raises(RequestError) as refused:
        engine.submit(Job([5, 8], Sampling(max_new_tokens=1), on_event=lambda event: None))
    assert refused.value.status == 429
    events = []
    job.on_event = events.append
    engine.stop()
    assert events[0][0] == "error" and events[0][1].status == 503


def test_sigterm_shuts_down_cleanly_during_a_stream(chatglm_chat, tmp_path):
    server = ChatServer(chatglm_chat[0], tmp_path / "server.log")
    stream = server.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=150, temperature=0.9, stream=True
    )
    next(iter(stream))
    server.process.send_signal(signal.SIGTERM)
    try:  # uvicorn lets the running stream finish (or ends it with a "shutting down" error event)
        finish = [chunk.choices[0].finish_reason for chunk in stream if chunk.choices][-1]
    except openai.APIError as error:
        finish = str(error)
    assert finish in ("stop", "length") or "shutting down" in finish
    assert server.process.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it is done
    server.stop()
    log = (tmp_path / "server.log").read_text()
    assert "Shutting down" in log and "Finished server process" in log and "Traceback" not in log
