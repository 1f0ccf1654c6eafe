"""The `glm-hf` command line."""

import argparse
import os
import random
import time
from collections.abc import Iterator

import torch

from .blank_infilling import batch_infilling, infilling_example
from .configuration_glm import GLMConfig
from .modeling_glm import GLMForConditionalGeneration
from .tokenization_glm import GLMTokenizer

FIRST_WORD_ID = 9  # ids below are GLMConfig's default special tokens


def progression_example(rng: random.Random, vocab_words: int, length: int, config: GLMConfig) -> tuple:
    """A token sequence that counts up by a fixed step, with one span of 1-4 tokens replaced by `[MASK]`."""
    start, step = rng.randrange(vocab_words), rng.randrange(1, 4)
    tokens = [FIRST_WORD_ID + (start + i * step) % vocab_words for i in range(length)]
    span_len = rng.randint(1, 4)
    begin = rng.randrange(1, length - span_len)
    part_a = tokens[:begin] + [config.mask_token_id] + tokens[begin + span_len :]
    return part_a, tokens[begin : begin + span_len]


def run_tiny(args: argparse.Namespace) -> None:
    """Trains a tiny GLM to fill blanks in counting sequences, then fills held-out blanks with generate()."""
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    vocab_words = 40
    config = GLMConfig(
        vocab_size=FIRST_WORD_ID + vocab_words,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=32,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    model = GLMForConditionalGeneration(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    print(f"tiny GLM: {sum(p.numel() for p in model.parameters()):,} parameters; training {args.steps} steps")
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        examples = []
        for _ in range(32):
            part_a, span = progression_example(rng, vocab_words, 12, config)
            examples.append(
                infilling_example(part_a, [span], config.blank_token_ids, config.sop_token_id, config.eop_token_id)
            )
        loss = model(**batch_infilling(examples, config.pad_token_id)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step == 1 or step % 250 == 0 or step == args.steps:
            print(f"step {step:4d}  loss {loss.item():.3f}")
    print(f"trained in {time.perf_counter() - started:.1f}s")

    model.eval()
    correct = 0
    for _ in range(args.eval_prompts):
        part_a, span = progression_example(rng, vocab_words, 12, config)
        output = model.generate(torch.tensor([part_a]), max_new_tokens=6, do_sample=False)
        fill = output[0, len(part_a) + 1 :].tolist()
        fill = fill[: fill.index(config.eop_token_id)] if config.eop_token_id in fill else fill
        correct += fill == span
        if _ < 3:
            print(f"prompt {part_a} -> fill {fill} (expected {span})")
    print(f"exact fills: {correct}/{args.eval_prompts}")
    if args.save:
        model.save_pretrained(args.save)
        print(f"saved to {args.save}")


def read_lines(paths: list[str]) -> Iterator[str]:
    """Non-empty lines of UTF-8 text files, streamed."""
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            yield from (line.rstrip("\n") for line in handle if line.strip())


def run_tokenizer_train(args: argparse.Namespace) -> None:
    """Trains a byte-level BPE GLM tokenizer on text files and saves it."""
    missing = [path for path in args.files if not os.path.isfile(path)]
    if missing:
        raise SystemExit(f"glm-hf tokenizer train: no such file: {', '.join(missing)}")
    tokenizer = GLMTokenizer.train_bpe(read_lines(args.files), vocab_size=args.vocab_size, show_progress=True)
    tokenizer.save_pretrained(args.output)
    print(f"trained a {len(tokenizer):,}-token GLM tokenizer; saved to {args.output}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glm-hf", description="GLM models for HuggingFace Transformers.")
    commands = parser.add_subparsers(dest="command", required=True)
    tiny = commands.add_parser("tiny", help="train a tiny GLM on counting sequences and fill blanks with it")
    tiny.add_argument("--steps", type=int, default=1500)
    tiny.add_argument("--eval-prompts", type=int, default=50)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--save", help="folder to save the trained model to")
    tiny.set_defaults(handler=run_tiny)

    tokenizer = commands.add_parser("tokenizer", help="tokenizer tools")
    tokenizer_commands = tokenizer.add_subparsers(dest="tokenizer_command", required=True)
    train = tokenizer_commands.add_parser("train", help="train a byte-level BPE GLM tokenizer on text files")
    train.add_argument("files", nargs="+", help="UTF-8 text files, one or more documents per line")
    train.add_argument("--vocab-size", type=int, default=32000)
    train.add_argument("--output", required=True, help="folder to save the tokenizer to")
    train.set_defaults(handler=run_tokenizer_train)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.handler(args)


if __name__ == "__main__":
    main()
