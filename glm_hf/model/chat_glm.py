"""THUDM's ChatGLM-6B chat API (`model.chat`, `model.stream_chat`) on glm-hf's generating head, so code written for
`AutoModel.from_pretrained("THUDM/chatglm-6b", trust_remote_code=True)` runs after changing only the line that
loads the model.

Follows `ChatGLMForConditionalGeneration.chat` / `stream_chat` / `process_response` in THUDM's `modeling_chatglm.py`
(huggingface.co/THUDM/chatglm-6b): the same signatures and defaults (`max_length=2048`, `do_sample=True`,
`top_p=0.7`, `temperature=0.95`), history as `[(query, response), ...]`, the prompt built by the tokenizer's chat
template (converted ChatGLM folders carry THUDM's round format, `glm_hf.chat_templates`), and the same response
post-processing. THUDM's `InvalidScoreLogitsProcessor` (NaN/inf scores force token 5) is replaced by transformers'
`remove_invalid_values=True`, which keeps generation going without naming a vocabulary-specific token.

One addition: queries and history are plain text (`plain_text=True`, the default): a `[gMASK]` or `<sop>` typed
into a message is text, so a user cannot change the prompt's structure (THUDM's tokenizer parses such strings).
"""

import queue
import re
import threading
from collections.abc import Iterator, Sequence

import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

History = list[tuple[str, str]]

# ChatGLM's `process_response`: ASCII punctuation next to a CJK character becomes its full-width form.
_FULL_WIDTH = ((",", "，"), ("!", "！"), (":", "："), (";", "；"), ("?", "？"))


def process_response(response: str) -> str:
    """THUDM's post-processing of a ChatGLM answer: stripped, `[[训练时间]]` replaced by `2023年`, and `, ! : ; ?`
    beside a CJK character turned full-width."""
    response = response.strip().replace("[[训练时间]]", "2023年")
    for ascii_mark, full_width in _FULL_WIDTH:
        mark = re.escape(ascii_mark)
        response = re.sub(rf"([\u4e00-\u9fff]){mark}", rf"\1{full_width}", response)
        response = re.sub(rf"{mark}([\u4e00-\u9fff])", rf"{full_width}\1", response)
    return response


def history_messages(query: str, history: Sequence[Sequence[str]] | None) -> list[dict[str, str]]:
    """THUDM's `(query, response)` history plus the new query, as chat messages."""
    messages = []
    for turn in history or []:
        if len(turn) != 2:
            raise ValueError(f"history holds (query, response) pairs; got {turn!r}.")
        messages += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}]
    return messages + [{"role": "user", "content": query}]


class _TokenQueue(BaseStreamer):
    """Receives generate()'s new tokens (the prompt first, which it skips) and hands them to another thread."""

    def __init__(self):
        self.tokens: queue.Queue = queue.Queue()
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.tokens.put(value.reshape(-1).tolist())

    def end(self) -> None:
        self.tokens.put(None)


class StopWhenSet(StoppingCriteria):
    """Stops every row once `event` is set (the consumer of a stream went away, a server shuts down)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class GLMChatMixin:
    """`chat` and `stream_chat` for a generating GLM head (needs `generate()` and a tokenizer with a chat template)."""

    @torch.no_grad()
    def chat(
        self,
        tokenizer,
        query: str,
        history: Sequence[Sequence[str]] | None = None,
        max_length: int = 2048,
        num_beams: int = 1,
        do_sample: bool = True,
        top_p: float = 0.7,
        temperature: float = 0.95,
        logits_processor: LogitsProcessorList | None = None,
        plain_text: bool = True,
        **kwargs,
    ) -> tuple[str, History]:
        """One answer to `query` after `history`; returns `(response, history + [(query, response)])`. Extra
        keyword arguments go to `generate()`. `plain_text=False` parses special-token strings in the messages as
        tokens (THUDM's behaviour); the default reads them as text."""
        inputs = self._chat_inputs(tokenizer, query, history, plain_text)
        options = self._chat_generation_options(max_length, do_sample, top_p, temperature, logits_processor, kwargs)
        outputs = self.generate(**inputs, num_beams=num_beams, **options)
        response = process_response(self._decode_answer(tokenizer, outputs[0, inputs["input_ids"].shape[1] :]))
        return response, _with_turn(history, query, response)

    @torch.no_grad()
    def stream_chat(
        self,
        tokenizer,
        query: str,
        history: Sequence[Sequence[str]] | None = None,
        max_length: int = 2048,
        do_sample: bool = True,
        top_p: float = 0.7,
        temperature: float = 0.95,
        logits_processor: LogitsProcessorList | None = None,
        plain_text: bool = True,
        **kwargs,
    ) -> Iterator[tuple[str, History]]:
        """Yields `(response so far, history + [(query, response so far)])` after every generated token, as THUDM's
        `stream_chat` does; the last item is the full answer. Closing the iterator early stops generation.
        `plain_text` as in `chat`."""
        inputs = self._chat_inputs(tokenizer, query, history, plain_text)
        options = self._chat_generation_options(max_length, do_sample, top_p, temperature, logits_processor, kwargs)
        streamer, cancelled = _TokenQueue(), threading.Event()
        stopping = StoppingCriteriaList([*options.pop("stopping_criteria", []), StopWhenSet(cancelled)])
        failure: list[BaseException] = []

        def generate() -> None:
            try:
                self.generate(**inputs, streamer=streamer, stopping_criteria=stopping, **options)
            except BaseException as error:  # re-raised in the consuming thread
                failure.append(error)
                streamer.end()

        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        answer: list[int] = []
        try:
            while (tokens := streamer.tokens.get()) is not None:
                answer += tokens
                response = process_response(self._decode_answer(tokenizer, answer))
                yield response, _with_turn(history, query, response)
        finally:
            cancelled.set()
            worker.join()
        if failure:
            raise failure[0]

    def _chat_inputs(self, tokenizer, query: str, history, plain_text: bool) -> dict[str, torch.Tensor]:
        """The prompt ids; with `plain_text`, message contents are text (`sanitize_control_tokens`), so only the
        template's own special tokens are tokens."""
        if tokenizer.chat_template is None:
            raise ValueError(
                "This tokenizer has no chat template. Converted ChatGLM and GLM folders carry one; for another GLM "
                "tokenizer set `tokenizer.chat_template = glm_hf.chat_templates.glm_chat_template(tokenizer)`."
            )
        inputs = tokenizer.apply_chat_template(
            history_messages(query, history),
            add_generation_prompt=True,
            return_dict=True,
            return_tensors="pt",
            sanitize_control_tokens=plain_text,
        )
        return {name: tensor.to(self.device) for name, tensor in inputs.items()}

    def _chat_generation_options(self, max_length, do_sample, top_p, temperature, logits_processor, extra) -> dict:
        options = {"max_length": max_length, "do_sample": do_sample, "top_p": top_p, "temperature": temperature}
        options |= {"remove_invalid_values": True, **extra}
        if logits_processor is not None:
            options["logits_processor"] = logits_processor
        if not do_sample:  # greedy: no sampling settings, so generate() does not warn that they are unused
            options.pop("top_p")
            options.pop("temperature")
        return options

    def _decode_answer(self, tokenizer, token_ids) -> str:
        stops = self.generation_config.eos_token_id
        stops = {*(stops if isinstance(stops, list) else [stops]), self.config.pad_token_id}
        ids = [int(token) for token in token_ids]
        while ids and ids[-1] in stops:
            ids.pop()
        return tokenizer.decode(ids, skip_special_tokens=True)


def _with_turn(history, query: str, response: str) -> History:
    return [*(tuple(turn) for turn in history or []), (query, response)]


__all__ = ["GLMChatMixin", "History", "StopWhenSet", "history_messages", "process_response"]
