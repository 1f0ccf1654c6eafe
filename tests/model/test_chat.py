"""Chat: THUDM's ChatGLM-6B conversation format as the chat template, `model.chat` / `model.stream_chat` as THUDM's
code behaves (checked against THUDM's math, tests/helpers/thudm_reference.py), ChatGLM's `[gMASK]`-first generation
rule, and chat messages through `pipeline("text-generation")`."""

import pytest
import torch
from jinja2 import TemplateError
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, StoppingCriteria, pipeline

from glm_hf.chat_templates import glm_chat_template
from glm_hf.demo.run import load_demo_tokenizer
from glm_hf.model.blank_infilling import generation_layout
from glm_hf.model.chat_glm import process_response
from tests.helpers.clean_process import load_in_clean_process
from tests.helpers.thudm_reference import chatglm_forward, greedy

HISTORY = [("你好", "你好，我是 ChatGLM"), ("what is the capital of France ?", "Paris\nand  Tokyo")]


def thudm_prompt(query: str, history: list[tuple[str, str]]) -> str:
    """The prompt THUDM's `ChatGLMForConditionalGeneration.chat` builds (its tokenizer then appends [gMASK] <sop>)."""
    if not history:
        return query
    prompt = "".join(f"[Round {i}]\n问：{q}\n答：{r}\n" for i, (q, r) in enumerate(history))
    return prompt + f"[Round {len(history)}]\n问：{query}\n答："


def messages(query: str, history: list[tuple[str, str]]) -> list[dict]:
    turns = [[{"role": "user", "content": q}, {"role": "assistant", "content": r}] for q, r in history]
    return [message for turn in turns for message in turn] + [{"role": "user", "content": query}]


@pytest.fixture(scope="module")
def chatglm(chatglm_chat):
    folder, state, config = chatglm_chat
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    return model, tokenizer, state, config


@pytest.mark.parametrize("history", [[], HISTORY[:1], HISTORY])
def test_chat_template_gives_the_ids_thudm_chat_builds(chatglm, history):
    _, tokenizer, _, _ = chatglm
    query = "hello  how are you ?"
    ours = tokenizer.apply_chat_template(messages(query, history), add_generation_prompt=True)["input_ids"]
    expected = tokenizer(thudm_prompt(query, history))["input_ids"]
    assert ours == expected and expected[-2:] == [tokenizer.gmask_token_id, tokenizer.sop_token_id]


def test_a_finished_conversation_renders_its_answer_as_the_span(chatglm, tmp_path):
    _, tokenizer, _, _ = chatglm
    conversation = messages("你好", HISTORY)[:-1]
    encoded = tokenizer.apply_chat_template(conversation, return_dict=True)
    prompt = tokenizer(thudm_prompt(HISTORY[1][0], HISTORY[:1]))["input_ids"]
    # THUDM's fine-tuning layout (ptuning/main.py): prompt ids, [gMASK] <sop>, the answer encoded alone, <eop>
    answer = tokenizer(HISTORY[1][1], add_special_tokens=False)["input_ids"] + [tokenizer.eop_token_id]
    assert encoded["input_ids"] == prompt + answer
    with pytest.raises(NotImplementedError, match="whitespace pieces"):  # ChatGLM's offsets would misplace them
        tokenizer.apply_chat_template(conversation, return_dict=True, return_assistant_tokens_mask=True)
    glm = load_demo_tokenizer()
    masked = glm.apply_chat_template(conversation, return_dict=True, return_assistant_tokens_mask=True)
    answer = glm(" " + HISTORY[1][1], add_special_tokens=False)["input_ids"] + [glm.eop_token_id]
    assert masked["input_ids"][-len(answer) :] == answer
    assert masked["assistant_masks"] == [0] * (len(masked["input_ids"]) - len(answer)) + [1] * len(answer)


def test_a_conversation_ending_with_an_answer_is_continued_or_refused(chatglm):
    """After an assistant message, `add_generation_prompt=True` would generate after the answer's <eop>: refused.
    `continue_final_message=True` continues the answer: the span without its <eop>."""
    _, tokenizer, _, _ = chatglm
    conversation = messages("你好", HISTORY)[:-1]
    with pytest.raises(TemplateError, match="ends with an assistant message.*continue_final_message=True"):
        tokenizer.apply_chat_template(conversation, add_generation_prompt=True)
    continued = tokenizer.apply_chat_template(conversation, continue_final_message=True)["input_ids"]
    finished = tokenizer.apply_chat_template(conversation)["input_ids"]
    assert continued == finished[:-1] and finished[-1] == tokenizer.eop_token_id


@pytest.mark.parametrize(
    "bad, message",
    [
        ([{"role": "bot", "content": "hi"}], "Unknown role 'bot'"),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "alternate"),
        ([{"role": "assistant", "content": "a"}], "alternate"),
        ([{"role": "system", "content": "be brief"}], "at least one user message"),
    ],
)
def test_bad_conversations_are_refused_with_a_clear_message(chatglm, bad, message):
    _, tokenizer, _, _ = chatglm
    with pytest.raises(TemplateError, match=message):
        tokenizer.apply_chat_template(bad, add_generation_prompt=True)


def test_a_system_message_is_a_plain_text_line_before_the_conversation(chatglm):
    _, tokenizer, _, _ = chatglm
    system = [{"role": "system", "content": "be brief"}]
    ours = tokenizer.apply_chat_template(system + messages("hello", []), add_generation_prompt=True)["input_ids"]
    assert ours == tokenizer("be brief\nhello")["input_ids"]


def test_glm_tokenizers_get_a_question_answer_template(tmp_path):
    tokenizer = load_demo_tokenizer()
    assert tokenizer.chat_template == glm_chat_template(tokenizer)
    text = tokenizer.apply_chat_template(messages("and japan ?", [("capital of france ?", "paris")]), tokenize=False)
    assert text == "Question: capital of france ?\nAnswer: paris\nQuestion: and japan ?\nAnswer:"
    finished = tokenizer.apply_chat_template(
        messages("q", [])[:1] + [{"role": "assistant", "content": "a"}], tokenize=False
    )
    assert finished == "Question: q\nAnswer: [gMASK]<|startofpiece|> a<|endofpiece|>"
    prompt = tokenizer.apply_chat_template(messages("q", []), add_generation_prompt=True, tokenize=False)
    assert prompt == "Question: q\nAnswer: [gMASK]<|startofpiece|>"
    tokenizer.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).chat_template == tokenizer.chat_template


def thudm_answer(chatglm, query: str, history, new_tokens: int) -> tuple[list[int], str]:
    """THUDM's greedy chat answer, from THUDM's math: greedy tokens up to `<eop>`, decoded, post-processed."""
    _, tokenizer, state, config = chatglm
    prompt = torch.tensor([tokenizer(thudm_prompt(query, history))["input_ids"]])
    with torch.no_grad():
        tokens = greedy(lambda ids: chatglm_forward(state, config, ids), prompt, new_tokens)[0, prompt.shape[1] :]
    tokens = tokens.tolist()
    if config["eos_token_id"] in tokens:
        tokens = tokens[: tokens.index(config["eos_token_id"])]
    return tokens, process_response(tokenizer.decode(tokens, skip_special_tokens=True))


@pytest.mark.parametrize("history", [[], HISTORY])
def test_greedy_chat_answers_as_thudm_chatglm_does(chatglm, history):
    model, tokenizer, _, _ = chatglm
    query = "你好"
    prompt_length = len(tokenizer(thudm_prompt(query, history))["input_ids"])
    response, new_history = model.chat(
        tokenizer, query, history=history, max_length=prompt_length + 12, do_sample=False
    )
    assert response == thudm_answer(chatglm, query, history, 12)[1]
    assert new_history == [*history, (query, response)]


def test_stream_chat_yields_growing_answers_ending_with_the_chat_answer(chatglm):
    model, tokenizer, _, _ = chatglm
    options = {"history": HISTORY[:1], "max_length": 60, "do_sample": False}
    expected, _ = model.chat(tokenizer, "hello", **options)
    streamed = list(model.stream_chat(tokenizer, "hello", **options))
    assert len(streamed) > 1 and streamed[-1][0] == expected
    assert streamed[-1][1] == [*HISTORY[:1], ("hello", expected)]


class StepCounter(StoppingCriteria):
    def __init__(self):
        self.steps = 0

    def __call__(self, input_ids, scores, **kwargs):
        self.steps += 1
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


def test_closing_a_stream_early_stops_generation(chatglm):
    model, tokenizer, _, _ = chatglm
    counter = StepCounter()
    stream = model.stream_chat(
        tokenizer, "hello", max_length=150, do_sample=False, eos_token_id=[], stopping_criteria=[counter]
    )
    next(stream)
    stream.close()  # sets the cancellation criterion and joins the generating thread
    assert 1 <= counter.steps < 150 - len(tokenizer("hello")["input_ids"])


def test_sampled_chat_uses_thudm_defaults_and_is_reproducible_with_a_seed(chatglm):
    model, tokenizer, _, _ = chatglm
    torch.manual_seed(3)
    first = model.chat(tokenizer, "hello", max_length=30)[0]
    torch.manual_seed(3)
    assert model.chat(tokenizer, "hello", max_length=30)[0] == first


def test_process_response_follows_thudm():
    assert process_response("  你好,世界!ok, fine ") == "你好，世界！ok, fine"
    assert process_response("现在是[[训练时间]]") == "现在是2023年"
    assert process_response("问?答:好;") == "问？答：好；"


def test_chatglm_generation_fills_gmask_even_after_a_mask(chatglm):
    """ChatGLM's rule: with both [MASK] and [gMASK] in a prompt, the generated span belongs to [gMASK]."""
    model, tokenizer, state, config = chatglm
    prompt = tokenizer("hello [MASK] are you", return_tensors="pt")["input_ids"]
    assert tokenizer.mask_token_id in prompt[0] and prompt[0, -2:].tolist() == [5, 8]
    with torch.no_grad():
        ours = model.generate(prompt, max_new_tokens=6, do_sample=False, eos_token_id=model.config.vocab_size)
        expected = greedy(lambda ids: chatglm_forward(state, config, ids), prompt, 6)
    assert ours.tolist() == expected.tolist()


def test_plain_glm_fills_the_first_blank():
    ids = torch.tensor([[9, 4, 10, 6]])  # w [MASK] w [gMASK]
    in_order = generation_layout(ids, [4, 5, 6], 7).position_ids
    gmask_first = generation_layout(ids, [4, 5, 6], 7, first_filled_token_id=6).position_ids
    assert in_order[0, :, -1].tolist() == [1, 1] and gmask_first[0, :, -1].tolist() == [3, 1]


def test_text_generation_pipeline_answers_chat_messages_as_model_chat(chatglm):
    model, tokenizer, _, _ = chatglm
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    chat = messages("你好", HISTORY)
    prompt_length = len(tokenizer.apply_chat_template(chat, add_generation_prompt=True)["input_ids"])
    output = generator(chat, max_new_tokens=10, do_sample=False)[0]["generated_text"]
    assert output[:-1] == chat and output[-1]["role"] == "assistant"
    expected, _ = model.chat(tokenizer, "你好", history=HISTORY, max_length=prompt_length + 10, do_sample=False)
    assert process_response(output[-1]["content"]) == expected


CLEAN_CHAT = """
import sys
sys.modules["glm_hf"] = None  # this user does not have glm_hf
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
folder, out = sys.argv[1], sys.argv[2]
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
model = AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
response, history = model.chat(tokenizer, "你好", history=[("hello", "fine")], max_length=70, do_sample=False)
torch.save({"response": response, "template": tokenizer.chat_template}, out)
"""


def test_chat_works_from_a_saved_folder_without_glm_hf(chatglm, tmp_path):
    model, tokenizer, _, _ = chatglm
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert (folder / "chat_glm.py").is_file()
    remote = load_in_clean_process(CLEAN_CHAT, folder, tmp_path)
    assert remote["template"] == tokenizer.chat_template
    assert remote["response"] == model.chat(tokenizer, "你好", [("hello", "fine")], max_length=70, do_sample=False)[0]
