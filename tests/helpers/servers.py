"""A real `glm-hf serve` subprocess for the serving tests, and the answer `model.chat` gives to compare it with."""

import os


class ChatServer:
    """A `glm-hf serve` subprocess on a free local port (a real server: uvicorn, the CLI, the engine thread)."""

    API_KEY = "test-key"

    def __init__(self, folder, log_path, *options: str):
        import socket
        import subprocess
        import sys
        import time
        import urllib.request

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

    def client(self, **options):
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=self.API_KEY, max_retries=0, **options)

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)
        self.log.close()
        return self.process.returncode


def chat_reference(chatglm, query: str, history=(), new_tokens: int = 16) -> str:
    """`model.chat`'s greedy answer to `query` after `history`, at most `new_tokens` past the templated prompt;
    `chatglm` is (model, tokenizer)."""
    model, tokenizer = chatglm
    prompt = tokenizer.apply_chat_template(
        [m for q, r in history for m in ({"role": "user", "content": q}, {"role": "assistant", "content": r})]
        + [{"role": "user", "content": query}],
        add_generation_prompt=True,
    )["input_ids"]
    return model.chat(tokenizer, query, list(history), max_length=len(prompt) + new_tokens, do_sample=False)[0]
