"""Which internal layout should GLM's causal face score plain text with? Measured on a trained demo model.

    python benchmarks/bench_causal_layout.py --model glm-demo

Two candidates for reading plain text `t_0 .. t_{n-1}` strictly left to right:
- "gmask_span": GLM's own left-to-right layout, `[gMASK] <|startofpiece|> t_0 .. t_{n-1}`: the text is one causal
  Part B span filling a `[gMASK]` at position 0 (positions (0, 0) for `[gMASK]`, then (0, 1), (0, 2), ...). This is
  what GLM and ChatGLM are trained to continue.
- "plain": THUDM's default for a prompt without blanks: a causal mask over the text itself, positions (i, 0).

For each of the demo's held-out fact sentences (never in its training text) the sentence is scored against the same
sentence with the answer replaced by each other answer of the same kind and language (up to 3 distractors); accuracy is
how often the true sentence gets the highest log-likelihood (summed over t_1 .. t_{n-1}, the tokens a causal LM
scores). Also the mean per-token negative log-likelihood of the true sentences.
"""

import argparse
import random

import torch

from glm_hf import GLMForConditionalGeneration, GLMTokenizer, corpus
from glm_hf.demo.run import DEMO_SEED


def token_log_probs(model: GLMForConditionalGeneration, ids: list[int], layout: str) -> torch.Tensor:
    """log p(t_i | t_<i) for i = 1 .. n-1 under `layout`."""
    config = model.config
    n = len(ids)
    if layout == "gmask_span":
        tokens = [config.gmask_token_id, config.sop_token_id, *ids]
        positions = [[0] * (n + 2), [0, *range(1, n + 2)]]
        first_scoring = 2  # the output at t_0 predicts t_1
    else:
        tokens, positions, first_scoring = ids, [list(range(n)), [0] * n], 0
    length = len(tokens)
    causal = torch.ones(length, length, dtype=torch.bool).tril()[None, None]
    with torch.no_grad():
        logits = model(torch.tensor([tokens]), attention_mask=causal, position_ids=torch.tensor([positions])).logits[0]
    log_probs = logits[first_scoring : first_scoring + n - 1].float().log_softmax(-1)
    return log_probs.gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]


def distractors(fact: corpus.Fact, facts: list[corpus.Fact], count: int, rng: random.Random) -> list[str]:
    answers = sorted({f.answer for f in facts if f.kind == fact.kind and f.language == fact.language} - {fact.answer})
    return rng.sample(answers, min(count, len(answers)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="glm-demo", help="a trained `glm-hf demo` folder")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = GLMForConditionalGeneration.from_pretrained(args.model).eval()
    tokenizer = GLMTokenizer.from_pretrained(args.model)
    train, held_out = corpus.split_facts(seed=DEMO_SEED)
    rng = random.Random(0)
    rows = []
    for layout in ("gmask_span", "plain"):
        hits = nll = tokens = 0
        for fact in held_out:
            candidates = [fact.answer, *distractors(fact, train + held_out, 3, random.Random(rng.random()))]
            scores = []
            for answer in candidates:
                ids = tokenizer(fact.text.replace(corpus.MASK, answer), add_special_tokens=False)["input_ids"]
                log_probs = token_log_probs(model, ids, layout)
                scores.append(float(log_probs.sum()))
                if answer == fact.answer:
                    nll -= float(log_probs.sum())
                    tokens += len(log_probs)
            hits += max(range(len(scores)), key=scores.__getitem__) == 0
        rows.append([layout, f"{hits / len(held_out):.3f}", f"{nll / tokens:.3f}"])
    print(f"{len(held_out)} held-out fact sentences, true sentence vs up to 3 distractors")
    print("| layout | log-likelihood accuracy | mean NLL per token |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
