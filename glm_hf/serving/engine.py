"""The generation engine behind `glm-hf serve`: dynamic batching of concurrent requests into shared `generate()`
calls on one worker thread, with per-request streaming, sampling, limits and cancellation.

Requests queue up while a batch runs; the worker then takes up to `max_batch_size` of them (waiting `batch_wait`
seconds for more to arrive) and generates them together: prompts left-padded, each row with its own sampling
settings (`RowSampler`: temperature, top_p and a seeded generator per row, so a row's tokens do not depend on its
batch), its own `max_tokens`, stop strings, deadline and cancellation (`RowTracker`, a stopping criterion that also
streams each row's new text). GLM's 2D positions make joining a running batch (continuous batching) a different
layout per row; dynamic batching keeps `generate()`'s layout, which is the model's own.

Every prompt is made a started GLM generation request (`blank_infilling.generation_request`), so every row of a
batch has the same layout.
"""

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from ..model.blank_infilling import generation_request, left_pad
from ..model.chat_glm import StopWhenSet

# Characters whose rendering may still change when more text arrives (chat post-processing turns ASCII
# punctuation beside CJK full-width, and strips trailing whitespace), held back until the next token.
_UNSETTLED = " \t\n,!:;?"


class RequestError(Exception):
    """A request the engine refuses or could not finish; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass
class Sampling:
    """One request's generation settings. `temperature == 0` is greedy decoding."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


@dataclass
class Job:
    """One completion to generate. `on_event` receives, from the worker thread, `("text", delta)` items and then
    exactly one `("done", finish_reason)` (`"stop"` or `"length"`) or `("error", RequestError)`."""

    prompt_ids: list[int]
    sampling: Sampling
    on_event: Callable[[tuple], None]
    view: Callable[[str], str] = lambda text: text
    deadline: float = float("inf")
    cancelled: threading.Event = field(default_factory=threading.Event)
    tokens: list[int] = field(default_factory=list)
    sent: str = ""
    finished: bool = False

    def finish(self, reason: str) -> None:
        if not self.finished:
            self.finished = True
            self.on_event(("done", reason))

    def fail(self, error: RequestError) -> None:
        if not self.finished:
            self.finished = True
            self.on_event(("error", error))


@dataclass
class Call:
    """Work that needs the model to itself (blank filling's sequential generate calls): `run()` on the worker."""

    run: Callable[[], object]
    on_event: Callable[[tuple], None]
    cancelled: threading.Event = field(default_factory=threading.Event)


class RowSampler(LogitsProcessor):
    """Per-row sampling inside a greedy `generate()`: a sampling row's scores become one token (drawn with its
    temperature, top_p and generator) at 0 and the rest at -inf, so generate's argmax takes the drawn token."""

    def __init__(self, jobs: list[Job], device: torch.device):
        self.jobs = jobs
        self.generators = [_generator(job.sampling.seed, device) for job in jobs]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for row, (job, generator) in enumerate(zip(self.jobs, self.generators, strict=True)):
            if job.sampling.temperature == 0 or job.finished:
                continue
            probs = top_p_filter(scores[row] / job.sampling.temperature, job.sampling.top_p).softmax(-1)
            token = torch.multinomial(probs, 1, generator=generator)
            scores[row] = torch.where(torch.arange(scores.shape[-1], device=scores.device) == token, 0.0, -torch.inf)
        return scores


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering of one row of logits: the smallest set of tokens whose probability reaches `top_p` (the
    most likely token always stays)."""
    if top_p >= 1.0:
        return logits
    ordered, order = logits.sort(descending=True)
    probs = ordered.softmax(-1)
    outside = probs.cumsum(-1) - probs >= top_p
    outside[0] = False
    return logits.scatter(0, order[outside], -torch.inf)


def _generator(seed: int | None, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


class RowTracker(StoppingCriteria):
    """After each step: hands every live row its new token, streams the row's new text, and stops the rows that
    ended (end-of-piece/eos, `max_tokens`, a stop string, cancellation or their deadline)."""

    def __init__(self, jobs: list[Job], tokenizer, stop_ids: set[int], engine: "BatchingEngine"):
        self.jobs, self.tokenizer, self.stop_ids, self.engine = jobs, tokenizer, stop_ids, engine
        engine.running = len(jobs)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        new_tokens = input_ids[:, -1].tolist()
        for job, token in zip(self.jobs, new_tokens, strict=True):
            if not job.finished:
                self._advance(job, token)
        self.engine.running = sum(not job.finished for job in self.jobs)
        return torch.tensor([job.finished for job in self.jobs], dtype=torch.bool, device=input_ids.device)

    def _advance(self, job: Job, token: int) -> None:
        if job.cancelled.is_set():
            job.fail(RequestError(499, "The client went away."))
            return
        if time.monotonic() > job.deadline:
            job.fail(RequestError(504, "The request took longer than the server's --request-timeout.", "timeout"))
            return
        job.tokens.append(token)
        if token in self.stop_ids:
            emit_text(job, self.tokenizer, job.tokens[:-1], final=True)
            job.finish("stop")
        elif emit_text(job, self.tokenizer, job.tokens, final=len(job.tokens) >= job.sampling.max_new_tokens):
            job.finish("stop")
        elif len(job.tokens) >= job.sampling.max_new_tokens:
            job.finish("length")


def emit_text(job: Job, tokenizer, tokens: list[int], final: bool) -> bool:
    """Sends the job's text that can no longer change; True when a stop string ended it (the text is cut before
    the stop string, which is not sent)."""
    text = job.view(tokenizer.decode(tokens, skip_special_tokens=True))
    hits = [index for index in (text.find(stop) for stop in job.sampling.stop) if index >= 0]
    stopped = bool(hits)
    if stopped:
        text, final = text[: min(hits)], True
    if not final:
        text = text.rstrip("\ufffd")  # an incomplete multi-byte character
        longest_stop = max((len(stop) for stop in job.sampling.stop), default=1)
        text = text[: max(len(text) - (longest_stop - 1), 0)].rstrip(_UNSETTLED)
    if text.startswith(job.sent) and len(text) > len(job.sent):
        job.on_event(("text", text[len(job.sent) :]))
        job.sent = text
    return stopped


class BatchingEngine:
    """Owns the model on one worker thread and batches the jobs submitted to it (see the module docstring)."""

    def __init__(
        self,
        model,
        tokenizer,
        max_batch_size: int = 16,
        max_queue: int = 64,
        batch_wait: float = 0.01,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_size, self.max_queue, self.batch_wait = max_batch_size, max_queue, batch_wait
        self.config = model.config
        stops = model.generation_config.eos_token_id
        self.stop_ids = {*(stops if isinstance(stops, list) else [stops])} - {None}
        self._queue: queue.Queue = queue.Queue()
        self._waiting = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._held: list = []
        self.running = 0
        self._worker = threading.Thread(target=self._run, name="glm-hf-engine", daemon=True)

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        """Ends the running batch at its next step, refuses what is still queued, and joins the worker."""
        self._stopping.set()
        if self._worker.is_alive():
            self._worker.join(timeout=30)
        while True:
            try:
                self._refuse(self._queue.get_nowait())
            except queue.Empty:
                break

    @property
    def queued(self) -> int:
        """Requests waiting for the worker."""
        return self._waiting

    def submit(self, work: Job | Call) -> None:
        """Queues a job or call; raises `RequestError` (503) when the server is stopping or the queue is full."""
        if self._stopping.is_set():
            raise RequestError(503, "The server is shutting down.")
        with self._lock:
            if self._waiting >= self.max_queue:
                raise RequestError(
                    429, f"The server's queue is full ({self.max_queue} requests); retry shortly.", "queue_full"
                )
            self._waiting += 1
        self._queue.put(work)

    def generation_prompt(self, ids: list[int]) -> list[int]:
        """`ids` as a GLM generation request ending in a started span (`blank_infilling.generation_request`)."""
        config = self.config
        return generation_request(ids, config.blank_token_ids, config.gmask_token_id, config.sop_token_id)

    def room_for_answer(self, prompt_ids: list[int]) -> int:
        """How many new tokens the position table leaves for the prompt's span (at least 1, for the length check
        to refuse the prompt itself if it is too long)."""
        started = len(prompt_ids) - prompt_ids.index(self.config.sop_token_id)
        return max(self.config.max_position_embeddings - started, 1)

    def check_length(self, prompt_ids: list[int], max_new_tokens: int) -> None:
        """Refuses (400) a prompt whose Part A or span would need positions past the model's position table."""
        limit = self.config.max_position_embeddings
        part_a = prompt_ids.index(self.config.sop_token_id)
        span = len(prompt_ids) - part_a + max_new_tokens - 1
        if part_a > limit or span >= limit:
            raise RequestError(
                400,
                f"The prompt has {part_a} tokens before the answer and asks for up to {max_new_tokens} new ones; this "
                f"model's positions cover {limit} prompt tokens and {limit - 1} answer tokens "
                "(max_position_embeddings). Shorten the prompt or lower max_tokens.",
                "context_length_exceeded",
            )

    def _refuse(self, work: Job | Call) -> None:
        with self._lock:
            self._waiting -= 1
        error = RequestError(503, "The server is shutting down.")
        if isinstance(work, Job):
            work.fail(error)
        else:
            work.on_event(("error", error))

    def _run(self) -> None:
        while not self._stopping.is_set():
            batch = self._next_batch()
            if not batch:
                continue
            if isinstance(batch[0], Call):
                self._run_call(batch[0])
            else:
                self._run_batch(batch)

    def _next_batch(self) -> list:
        """A `Call` alone, or up to `max_batch_size` jobs (waiting `batch_wait` for more after the first)."""
        first = self._held.pop() if self._held else self._take(timeout=0.1)
        if first is None or isinstance(first, Call):
            return [first] if first is not None else []
        batch, closing = [first], time.monotonic() + self.batch_wait
        while len(batch) < self.max_batch_size:
            work = self._take(timeout=max(closing - time.monotonic(), 0.0))
            if work is None:
                break
            if isinstance(work, Call):
                self._held.append(work)
                break
            batch.append(work)
        return batch

    def _take(self, timeout: float) -> Job | Call | None:
        try:
            work = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None
        with self._lock:
            self._waiting -= 1
        return work

    def _run_call(self, call: Call) -> None:
        if call.cancelled.is_set():
            return
        try:
            call.on_event(("result", call.run()))
        except RequestError as error:
            call.on_event(("error", error))
        except Exception as error:
            call.on_event(("error", RequestError(500, f"Generation failed: {error}")))

    def _run_batch(self, jobs: list[Job]) -> None:
        now = time.monotonic()
        for job in jobs:
            if job.cancelled.is_set():
                job.fail(RequestError(499, "The client went away."))
            elif now > job.deadline:
                job.fail(RequestError(504, "The request waited longer than --request-timeout.", "timeout"))
        jobs = [job for job in jobs if not job.finished]
        if not jobs:
            return
        input_ids, attention_mask = left_pad([job.prompt_ids for job in jobs], self.config.pad_token_id)
        input_ids, attention_mask = input_ids.to(self.model.device), attention_mask.to(self.model.device)
        tracker = RowTracker(jobs, self.tokenizer, self.stop_ids, self)
        generation = GenerationConfig(
            max_new_tokens=max(job.sampling.max_new_tokens for job in jobs),
            do_sample=False,
            eos_token_id=sorted(self.stop_ids),
            pad_token_id=self.config.pad_token_id,
        )
        try:
            with torch.inference_mode():
                self.model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    generation_config=generation,
                    logits_processor=LogitsProcessorList([RowSampler(jobs, input_ids.device)]),
                    stopping_criteria=StoppingCriteriaList([tracker, StopWhenSet(self._stopping)]),
                )
        except Exception as error:
            for job in jobs:
                job.fail(RequestError(500, f"Generation failed: {error}"))
        for job in jobs:
            if self._stopping.is_set():
                job.fail(RequestError(503, "The server is shutting down."))
            job.finish("length")
        self.running = 0


__all__ = ["BatchingEngine", "Call", "Job", "RequestError", "Sampling", "top_p_filter"]
