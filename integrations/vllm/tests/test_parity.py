"""vLLM answers exactly as glm-hf's `generate()` for a GLM-style and a ChatGLM-style (GeGLU) tiny model.

A prompt that ends in Part A (`... [gMASK]`, what `generate()` takes) gets `<|startofpiece|>` as its first generated
token, then glm-hf's answer; a chat prompt (its template ends in `<|startofpiece|>`) gets the answer directly.
"""

import pytest
from conftest import TOKENIZER_MODES
from vllm import SamplingParams
from vllm.exceptions import VLLMValidationError
from vllm.inputs import TokensPrompt

LOGPROB_TOLERANCE = 1e-4


def greedy(expected: dict, logprobs: int | None = None, span_started: bool = False) -> SamplingParams:
    extra = 0 if span_started else 1  # the generated <|startofpiece|>
    return SamplingParams(temperature=0.0, max_tokens=expected["max_new_tokens"] + extra, logprobs=logprobs)


def answer_of(output, sop_token_id: int) -> list[int]:
    """The answer after the generated `<|startofpiece|>`, which must come first."""
    tokens = list(output.outputs[0].token_ids)
    assert tokens[:1] == [sop_token_id], f"the first generated token must be <|startofpiece|>, got {tokens[:1]}"
    return tokens[1:]


def top5_difference(steps: list[dict], reference: list[list]) -> float:
    """The largest difference between vLLM's and glm-hf's top-5 log-probabilities over the answer's steps, after
    checking that both rank the same five tokens first."""
    worst = 0.0
    for step, want in zip(steps, reference, strict=True):
        top5 = sorted(step.items(), key=lambda item: -item[1].logprob)[:5]
        assert [token for token, _ in top5] == [token for token, _ in want]
        worst = max(worst, *(abs(got.logprob - value) for (_, got), (_, value) in zip(top5, want, strict=True)))
    return worst


def test_single_requests_as_token_ids(llm, model_case, expected):
    for case in model_case[1]["prompts"]:
        (output,) = llm.generate(TokensPrompt(prompt_token_ids=case["ids"]), greedy(expected), use_tqdm=False)
        assert answer_of(output, expected["sop_token_id"]) == case["answer"], case["text"]


def test_batch_of_prompt_lengths_with_top5_logprobs(llm, model_case, expected):
    """All prompts (lengths 3 to 23) in one batch: the same answers, and every answer step's top-5 log-probabilities
    equal glm-hf's (same tokens, values within 1e-4)."""
    cases = model_case[1]["prompts"]
    assert len({len(case["ids"]) for case in cases}) == len(cases)
    prompts = [TokensPrompt(prompt_token_ids=case["ids"]) for case in cases]
    outputs = llm.generate(prompts, greedy(expected, logprobs=5), use_tqdm=False)
    worst = 0.0
    for case, output in zip(cases, outputs, strict=True):
        assert answer_of(output, expected["sop_token_id"]) == case["answer"], case["text"]
        steps = output.outputs[0].logprobs
        assert steps[0][expected["sop_token_id"]].logprob == 0.0  # forced: nothing else was possible
        worst = max(worst, top5_difference(steps[1:], case["top5"]))
    print(f"\n{model_case[0]}: largest top-5 logprob difference {worst:.2e}")
    assert worst <= LOGPROB_TOLERANCE


def test_text_prompts(llm, model_case, expected):
    """Prompts as text: the folder's tokenizer gives glm-hf's ids, and the answers are glm-hf's."""
    cases = model_case[1]["prompts"]
    outputs = llm.generate([case["text"] for case in cases], greedy(expected), use_tqdm=False)
    for case, output in zip(cases, outputs, strict=True):
        assert list(output.prompt_token_ids) == case["ids"]
        assert answer_of(output, expected["sop_token_id"]) == case["answer"], case["text"]


def test_chat_uses_the_folders_template(llm, model_case, expected):
    """The chat template ends in `[gMASK] <|startofpiece|>`: Part B is in the prompt (Part A must not see it), and the
    answer starts at once, with glm-hf's log-probabilities."""
    chat = model_case[1]["chat"]
    (output,) = llm.chat(chat["messages"], greedy(expected, logprobs=5, span_started=True), use_tqdm=False)
    assert list(output.prompt_token_ids) == chat["ids"]
    assert list(output.outputs[0].token_ids) == chat["answer"]
    assert top5_difference(output.outputs[0].logprobs, chat["top5"]) <= LOGPROB_TOLERANCE


def test_causal_heads_reading_of_plain_text(llm, model_case, expected):
    """Plain text sent after `[gMASK] <|startofpiece|>` is read as glm-hf's causal head reads it (the span of a blank
    at position 0), so vLLM continues it as `GLMForCausalLM.generate()` does."""
    causal = model_case[1]["causal"]
    prompt = TokensPrompt(prompt_token_ids=[expected["gmask_token_id"], expected["sop_token_id"], *causal["ids"]])
    (output,) = llm.generate(prompt, greedy(expected, span_started=True), use_tqdm=False)
    assert list(output.outputs[0].token_ids) == causal["answer"]


def test_seeded_sampling_repeats(llm, model_case, expected):
    case = model_case[1]["prompts"][1]
    params = SamplingParams(temperature=1.0, top_p=0.9, seed=1234, max_tokens=expected["max_new_tokens"])
    prompt = TokensPrompt(prompt_token_ids=case["ids"])
    first, second = (llm.generate([prompt, prompt], params, use_tqdm=False) for _ in range(2))
    runs = [list(output.outputs[0].token_ids) for output in (*first, *second)]
    assert runs[0][0] == expected["sop_token_id"]
    assert all(run == runs[0] for run in runs), runs


BAD_PROMPTS = ["Hello world", "Hello <|startofpiece|> world [MASK]"]  # no blank; no blank before the span


@pytest.mark.parametrize("prompt", BAD_PROMPTS)
def test_prompt_without_a_blank(llm, model_case, expected, prompt):
    """GLM cannot lay out a prompt without a blank before `<|startofpiece|>`. The plugin's renderer (the default)
    refuses it with a message saying how to fix it; behind vLLM's plain renderer, the model ends that request at once
    (an empty answer) instead of generating from a made-up layout, and the other requests go on."""
    good = model_case[1]["prompts"][0]
    if TOKENIZER_MODES[model_case[0]] == "auto":
        with pytest.raises(VLLMValidationError, match=r"no blank to fill.*end it with \[gMASK\]"):
            llm.generate([prompt, good["text"]], greedy(expected), use_tqdm=False)
        return
    bad, ok = llm.generate([prompt, good["text"]], greedy(expected), use_tqdm=False)
    assert bad.outputs[0].text == "" and bad.outputs[0].finish_reason == "stop"
    assert answer_of(ok, expected["sop_token_id"]) == good["answer"]
