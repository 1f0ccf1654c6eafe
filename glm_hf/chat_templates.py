"""Chat templates (`tokenizer.chat_template`) for GLM tokenizers: THUDM's ChatGLM-6B conversation format, and a
question/answer format for GLM checkpoints and `glm-hf demo` models.

Both render a conversation as GLM reads a generation request: the conversation is Part A, ending in `[gMASK]`, and
the answer is the span after `<|startofpiece|>` (ChatGLM: `<sop>`). So `apply_chat_template(messages,
add_generation_prompt=True)` ends with the blank and the span start, and a conversation that ends with an
assistant message renders the answer as that span, closed by the end-of-piece token, inside `{% generation %}`
(what `return_assistant_tokens_mask=True` and TRL's assistant-only loss read); `continue_final_message=True` cuts
that span after the answer's text, so generation continues the answer. Asking for a new answer
(`add_generation_prompt=True`) after an assistant message is refused: the model would generate after the answer's
end-of-piece token. The answer is rendered after a
space, so it tokenizes as a text of its own does (THUDM's fine-tuning code encodes the answer separately, with
SentencePiece's leading `▁`). A leading system message is put
before the conversation as plain text on its own line (neither format has a system role). Roles must be `system`
(first only), then `user` and `assistant` alternating, starting with `user`; anything else raises a
`TemplateError` that says so.

Message contents are plain text: `GLMTokenizer.apply_chat_template` tokenizes with `sanitize_control_tokens=True`
by default, so a `[gMASK]` or `<|startofpiece|>` typed into a message is text and only the special tokens these
templates write are tokens.

Templates are data in the tokenizer's saved files, so they survive `save_pretrained` and load with or without
glm_hf.
"""

from transformers import PreTrainedTokenizerBase

# Shared checks and the system line; `{round}`-style names below are filled per format.
_CONVERSATION = """\
{%- if messages and messages[0]['role'] == 'system' -%}
  {%- set system = messages[0]['content'] -%}{%- set turns = messages[1:] -%}
{%- else -%}
  {%- set system = '' -%}{%- set turns = messages -%}
{%- endif -%}
{%- if not turns -%}{{ raise_exception('A chat needs at least one user message.') }}{%- endif -%}
{%- for message in turns -%}
  {%- if message['role'] not in ['user', 'assistant'] -%}
    {{ raise_exception("Unknown role '" ~ message['role'] ~ "': use 'system' (first message only), 'user' and "
                       ~ "'assistant'.") }}
  {%- endif -%}
  {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
    {{ raise_exception('Roles must alternate user, assistant, user, ... starting with user (after an optional '
                       ~ 'system message).') }}
  {%- endif -%}
  {%- if message['content'] is not string -%}
    {{ raise_exception('Message content must be a string.') }}
  {%- endif -%}
{%- endfor -%}
{%- set last_user = turns|length - 1 if turns[-1]['role'] == 'user' else turns|length - 2 -%}
{{- PREFIX -}}
{%- if system -%}{{ system ~ '\\n' }}{%- endif -%}
"""

_ANSWER = """\
{%- if turns[-1]['role'] == 'assistant' -%}
  {%- if add_generation_prompt -%}
    {{ raise_exception('The conversation ends with an assistant message, so add_generation_prompt=True has no answer '
                       ~ 'to start: drop that message to ask for a new answer, or pass continue_final_message=True '
                       ~ '(without add_generation_prompt) to continue it.') }}
  {%- endif -%}
  {{- BLANK -}}{% generation %}{{ ' ' ~ turns[-1]['content'] ~ END }}{% endgeneration %}
{%- elif add_generation_prompt -%}
  {{- BLANK -}}
{%- endif -%}
"""

# THUDM ChatGLM-6B, `modeling_chatglm.py` (huggingface.co/THUDM/chatglm-6b, `ChatGLMForConditionalGeneration.chat`
# and `stream_chat`): no history -> the query itself; else `[Round i]\n问：{query}\n答：{response}\n` per past
# round, then `[Round n]\n问：{query}\n答：`. Its tokenizer (`tokenization_chatglm.py`,
# `build_inputs_with_special_tokens`) appends `[gMASK] <sop>`.
_CHATGLM_ROUNDS = """\
{%- if last_user == 0 -%}
  {{- turns[0]['content'] -}}
{%- else -%}
  {%- for i in range(0, last_user, 2) -%}
    {{- '[Round ' ~ (i // 2) ~ ']\\n问：' ~ turns[i]['content'] ~ '\\n答：' ~ turns[i + 1]['content'] ~ '\\n' -}}
  {%- endfor -%}
  {{- '[Round ' ~ (last_user // 2) ~ ']\\n问：' ~ turns[last_user]['content'] ~ '\\n答：' -}}
{%- endif -%}
"""

_QUESTION_ANSWER_ROUNDS = """\
{%- for i in range(0, last_user, 2) -%}
  {{- 'Question: ' ~ turns[i]['content'] ~ '\\nAnswer: ' ~ turns[i + 1]['content'] ~ '\\n' -}}
{%- endfor -%}
{{- 'Question: ' ~ turns[last_user]['content'] ~ '\\nAnswer:' -}}
"""


def _jinja_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _template(rounds: str, prefix: str, blank: str, end: str) -> str:
    body = _CONVERSATION + rounds + _ANSWER
    for name, value in (("PREFIX", prefix), ("BLANK", blank), ("END", end)):
        body = body.replace(name, _jinja_string(value))
    return body


def chatglm_chat_template() -> str:
    """THUDM's ChatGLM-6B conversation format, ids included: the rendered text tokenizes (without added special
    tokens) to exactly what ChatGLM's `chat()` feeds its model for the same history."""
    return _template(_CHATGLM_ROUNDS, prefix="", blank="[gMASK]<sop>", end="<eop>")


def glm_chat_template(tokenizer: PreTrainedTokenizerBase) -> str:
    """A question/answer format for GLM tokenizers: `Question: ...\\nAnswer: ...` rounds, the last answer being the
    `[gMASK]` span. The special tokens the tokenizer puts around a text (THUDM's `[CLS] text <eos>`) are placed as
    it places them, so Part A reads as the model was trained to read it."""
    before, after = _added_specials(tokenizer)
    sop, eop, gmask = (getattr(tokenizer, name) for name in ("sop_token", "eop_token", "gmask_token"))
    return _template(_QUESTION_ANSWER_ROUNDS, prefix=before, blank=f" {gmask}{after}{sop}", end=eop)


def ensure_chat_template(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Gives a GLM tokenizer without a chat template the question/answer one (`glm_chat_template`); a template it
    has is kept. Returns the tokenizer."""
    if tokenizer.chat_template is None:
        tokenizer.chat_template = glm_chat_template(tokenizer)
    return tokenizer


def _added_specials(tokenizer: PreTrainedTokenizerBase) -> tuple[str, str]:
    """The special tokens the tokenizer adds before and after a text, as strings."""
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x", add_special_tokens=True)["input_ids"]
    start = next(i for i in range(len(full)) if full[i : i + len(plain)] == plain)
    before, after = full[:start], full[start + len(plain) :]
    return tokenizer.decode(before), tokenizer.decode(after)


__all__ = ["chatglm_chat_template", "ensure_chat_template", "glm_chat_template"]
