"""Builds tiny random GLM-style and ChatGLM-style folders with glm-hf and writes what glm-hf's `generate()` answers.

Run with glm-hf's interpreter (its environment, not vLLM's): `python make_expected.py OUT_DIR`. Writes
`OUT_DIR/<name>/` (a `save_pretrained` folder: weights, config, tokenizer with a chat template) for each model and
`OUT_DIR/expected.json`: per model and prompt, the prompt ids (ending in Part A, as `generate()` takes them), the
greedy answer (the tokens after `<|startofpiece|>`), glm-hf's 2D positions of the whole sequence, the top-5
log-probabilities of every answer step, and the smallest gap between the best and second-best logit (how far greedy
decoding is from a tie); and the causal head's (`GLMForCausalLM`) greedy continuation of a plain text. The vLLM tests
compare against these; only glm-hf's public API is used.
"""

import json
import sys
from pathlib import Path

import torch
from glm_hf import GLMConfig, GLMForCausalLM, GLMForConditionalGeneration, GLMTokenizer, blank_infilling

MAX_NEW_TOKENS = 12
TOP_K = 5
CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome. Once upon a time there was a king.",
    "The story ends here. Question: what is the capital of France? Answer: Paris is the capital.",
    "Hello world, this is a tiny corpus for a tiny tokenizer, with numbers 1 2 3 and words to learn.",
] * 20
PROMPTS = [
    "The capital of France is [MASK].",
    "Once upon a time [gMASK]",
    "[sMASK] The story ends here.",
    "Hello world, this is a [MASK] for a tiny tokenizer, with numbers 1 2 3 and words to learn. [gMASK]",
    "Paris [gMASK]",
]
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
CAUSAL_TEXT = "Once upon a time there was a king"
# A question/answer chat template in glm-hf's form: the conversation is Part A ending in [gMASK], the answer the span.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}Question: {{ message['content'] }}\n"
    "{% else %}Answer: {{ message['content'] }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Answer: [gMASK]<|startofpiece|>{% endif %}"
)
SIZES = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128)
MODELS = {
    # GLM (2021): learned 2D position tables, pre-LN, GeLU, output layer tied to the word embeddings.
    "glm": dict(position_encoding="learned_2d", layernorm_style="pre", tie_word_embeddings=True),
    # ChatGLM-6B style: 2D rotary (float16-rounded frequencies), post-LN with alpha, GeGLU, separate output layer,
    # [gMASK] filled first.
    "chatglm": dict(
        position_encoding="rotary_2d",
        rope_fp16_frequencies=True,
        layernorm_style="post_alpha",
        use_glu=True,
        tie_word_embeddings=False,
        blank_fill_order="gmask_first",
    ),
}


def greedy(model: GLMForConditionalGeneration, ids: list[int]) -> dict:
    """glm-hf's greedy answer to one prompt, with the top-5 log-probabilities of each step."""
    out = model.generate(
        torch.tensor([ids]),
        max_new_tokens=MAX_NEW_TOKENS,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )
    sequence = out.sequences[0].tolist()
    prompt_length = sequence.index(model.config.sop_token_id, len(ids) - 1) + 1
    answer = sequence[prompt_length:]
    top5, gap = [], float("inf")
    for step in out.logits[: len(answer)]:
        logprobs = torch.log_softmax(step[0].float(), dim=-1)
        values, indices = logprobs.topk(TOP_K)
        top5.append([[int(i), float(v)] for i, v in zip(indices, values, strict=True)])
        gap = min(gap, float(values[0] - values[1]))
    config = model.config
    positions = blank_infilling.build_position_ids(
        out.sequences[:, : prompt_length + len(answer)],
        config.blank_token_ids,
        config.sop_token_id,
        None,
        config.first_filled_token_id,
    )
    return {"ids": ids, "answer": answer, "top5": top5, "min_gap": gap, "positions": positions[0].T.tolist()}


def build(name: str, switches: dict, tokenizer: GLMTokenizer, folder: Path) -> dict:
    torch.manual_seed(0)
    config = GLMConfig(vocab_size=len(tokenizer), initializer_range=0.1, **SIZES, **switches)
    model = GLMForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    prompts = [{"text": text, **greedy(model, tokenizer(text)["input_ids"])} for text in PROMPTS]
    chat_ids = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True, return_dict=False)
    return {
        "path": str(folder),
        "prompts": prompts,
        "chat": {"messages": CHAT, **greedy(model, list(chat_ids))},
        "causal": causal_greedy(GLMForCausalLM.from_pretrained(folder).eval(), tokenizer(CAUSAL_TEXT)["input_ids"]),
    }


def causal_greedy(model: GLMForCausalLM, ids: list[int]) -> dict:
    """The causal head's greedy continuation of plain text (read after `[gMASK] <|startofpiece|>`)."""
    out = model.generate(torch.tensor([ids]), max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    return {"ids": ids, "answer": out[0, len(ids) :].tolist()}


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = GLMTokenizer.train_bpe(CORPUS, vocab_size=400, min_frequency=1)
    tokenizer.chat_template = CHAT_TEMPLATE
    expected = {
        "max_new_tokens": MAX_NEW_TOKENS,
        "sop_token_id": tokenizer.sop_token_id,
        "gmask_token_id": tokenizer.gmask_token_id,
        "models": {name: build(name, switches, tokenizer, out_dir / name) for name, switches in MODELS.items()},
    }
    (out_dir / "expected.json").write_text(json.dumps(expected, indent=1))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python make_expected.py OUT_DIR  (run with glm-hf's interpreter)")
    main(Path(sys.argv[1]))
