"""`glm-hf demo`: pretrain a tiny GLM on the embedded corpus and measure how well it fills held-out blanks.

The model trains with `DataCollatorForBlankInfilling` and the stock `Trainer` on `corpus.documents()`, from which
the held-out facts of `corpus.split_facts()` are removed; it is then asked to fill those facts' blanks. The shipped
tokenizer (`demo/tokenizer`) is what `train_demo_tokenizer()` builds; `scripts/build_demo_tokenizer.py`
rebuilds it.
"""

import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset

from ..chat_templates import ensure_chat_template
from ..folder_writes import check_destination, staged_folder
from ..model.configuration_glm import GLMConfig
from ..model.modeling_glm import GLMForConditionalGeneration
from ..model.tokenization_glm import GLMTokenizer
from ..model_card import CardInfo
from ..training.pretraining import fill_blanks, pretrain, save_run_artifacts
from . import corpus

DEMO_TOKENIZER_DIR = Path(__file__).parent / "tokenizer"
DEMO_VOCAB_SIZE = 2048
DEMO_SEED = 0
GENERATION_PROMPTS = ("The capital of Italy is Rome. [gMASK]", "法国的首都是巴黎。[gMASK]")


@dataclass
class DemoSettings:
    """Sizes and schedule of the demo run; the defaults train and evaluate in 4 to 5 minutes on two CPU cores."""

    max_steps: int = 3000
    batch_size: int = 32
    learning_rate: float = 3e-3
    row_length: int = 64
    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    objective_probs: tuple[float, float, float] = (0.8, 0.0, 0.2)
    mask_ratio: float = 0.3
    corpus_draws: int = 32
    full_corpus: bool = False
    seed: int = DEMO_SEED
    progress_bar: bool = True


@dataclass
class DemoResult:
    """What the demo measured: held-out exact match overall and per fact kind, and the frequency baseline."""

    exact_match: float
    baseline: float
    per_kind: dict[str, tuple[int, int]]
    examples: list[tuple[str, str, str]] = field(default_factory=list)
    generations: list[tuple[str, str]] = field(default_factory=list)
    final_loss: float = float("nan")


def demo_training_texts(
    full_corpus: bool = False, draws: int = 1
) -> tuple[list[str], list[corpus.Fact], list[corpus.Fact]]:
    """The demo's training documents (held-out facts removed) with the (train, held-out) fact split.

    By default only the fact statements and their translations: a few-million-parameter model learns the facts
    within minutes from them. `full_corpus` adds the everyday sentence pairs and the standard library's prose.
    `draws` concatenates that many `corpus.documents()` draws (seeds `DEMO_SEED`, `DEMO_SEED + 1`, ...): the same
    training facts, grouped and ordered differently in each, so packed rows rarely repeat (the prose comes once)."""
    train, held_out = corpus.split_facts(seed=DEMO_SEED)
    documents = [
        document
        for draw in range(draws)
        for document in corpus.documents(
            seed=DEMO_SEED + draw,
            include_prose=full_corpus and draw == 0,
            include_everyday=full_corpus,
            held_out=held_out,
        )
    ]
    return documents, train, held_out


def train_demo_tokenizer() -> GLMTokenizer:
    """The demo tokenizer: a byte-level BPE of `DEMO_VOCAB_SIZE` tokens on the corpus's facts and sentence pairs
    (without the held-out facts and the prose, whose content depends on the Python installation)."""
    _, held_out = corpus.split_facts(seed=DEMO_SEED)
    documents = corpus.documents(seed=DEMO_SEED, include_prose=False, held_out=held_out)
    return ensure_chat_template(GLMTokenizer.train_bpe(documents, vocab_size=DEMO_VOCAB_SIZE))


def load_demo_tokenizer() -> GLMTokenizer:
    """The shipped demo tokenizer, or a freshly trained one where the package was installed without it."""
    if (DEMO_TOKENIZER_DIR / "tokenizer.json").is_file():
        return ensure_chat_template(GLMTokenizer.from_pretrained(DEMO_TOKENIZER_DIR))
    return train_demo_tokenizer()


def demo_config(tokenizer: GLMTokenizer, settings: DemoSettings) -> GLMConfig:
    """A GLM of a few million parameters whose position tables cover a packed row and its Part B."""
    return GLMConfig(
        vocab_size=len(tokenizer),
        hidden_size=settings.hidden_size,
        num_hidden_layers=settings.num_hidden_layers,
        num_attention_heads=settings.num_attention_heads,
        max_position_embeddings=2 * settings.row_length,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )


def run_demo(output_dir: str | Path, settings: DemoSettings | None = None, overwrite: bool = False) -> DemoResult:
    """Pretrains the demo GLM, evaluates held-out blank filling, saves model, tokenizer, loss curve and model card
    to `output_dir` (a non-empty one only with `overwrite`; swapped in once complete), and returns the
    measurements."""
    settings = settings or DemoSettings()
    check_destination(output_dir, overwrite=overwrite)
    torch.manual_seed(settings.seed)
    documents, train_facts, held_out = demo_training_texts(settings.full_corpus, settings.corpus_draws)
    tokenizer = load_demo_tokenizer()
    with tempfile.TemporaryDirectory() as scratch:  # the Trainer's output_dir; it saves nothing there
        trainer = pretrain(
            Dataset.from_dict({"text": documents}),
            tokenizer,
            demo_config(tokenizer, settings),
            scratch,
            row_length=settings.row_length,
            max_steps=settings.max_steps,
            batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
            seed=settings.seed,
            progress_bar=settings.progress_bar,
            mask_ratio=settings.mask_ratio,
            objective_probs=settings.objective_probs,
        )
    model = trainer.model
    with staged_folder(output_dir, overwrite=overwrite) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            result = evaluate_demo_model(model, tokenizer, train_facts, held_out)
        except Exception as error:  # minutes of training are never lost to an evaluation error: the model is kept
            evaluation_error = error
        else:
            evaluation_error = None
            result.final_loss = next(entry["loss"] for entry in reversed(trainer.state.log_history) if "loss" in entry)
            save_run_artifacts(staging, trainer.state.log_history, _card(settings, result), model.num_parameters())
    if evaluation_error is not None:
        raise DemoEvaluationError(
            f"training finished and the model and tokenizer are saved in {output_dir}, but evaluating them failed "
            f"({type(evaluation_error).__name__}: {evaluation_error})"
        ) from evaluation_error
    return result


class DemoEvaluationError(RuntimeError):
    """Evaluation failed after training; the trained model and tokenizer are already saved."""


def evaluate_demo_model(
    model: GLMForConditionalGeneration,
    tokenizer: GLMTokenizer,
    train_facts: list[corpus.Fact],
    held_out: list[corpus.Fact],
) -> DemoResult:
    """Greedy fills of the held-out facts' blanks against their answers and the frequency baseline, plus the
    `[gMASK]` generations the demo prints."""
    fills = fill_blanks(model, tokenizer, [fact.text for fact in held_out])
    result = _score(held_out, fills, corpus.frequency_baseline(train_facts, held_out))
    generated = fill_blanks(model, tokenizer, GENERATION_PROMPTS, max_new_tokens=24)
    result.generations = list(zip(GENERATION_PROMPTS, generated, strict=True))
    return result


def _score(held_out: list[corpus.Fact], fills: list[str], baseline: float) -> DemoResult:
    hits: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for fact, fill in zip(held_out, fills, strict=True):
        group = f"{fact.kind} ({fact.language})"
        totals[group] += 1
        hits[group] += fill == fact.answer
    examples = [(fact.text, fact.answer, fill) for fact, fill in zip(held_out, fills, strict=True)]
    return DemoResult(
        exact_match=sum(hits.values()) / len(held_out),
        baseline=baseline,
        per_kind={group: (hits[group], totals[group]) for group in sorted(totals)},
        examples=examples,
    )


def _card(settings: DemoSettings, result: DemoResult) -> CardInfo:
    table = ["| facts | exact | total |", "|---|---|---|"]
    table += [f"| {group} | {hit} | {total} |" for group, (hit, total) in result.per_kind.items()]
    return CardInfo(
        title="glm-hf demo: a tiny GLM pretrained on the embedded bilingual corpus",
        training=(
            f"Pretrained from scratch by `glm-hf demo` on glm-hf's embedded corpus (`glm_hf.demo.corpus`: facts and "
            f"English/Chinese translation pairs; {settings.corpus_draws} differently shuffled draws of the training "
            f"documents) with `DataCollatorForBlankInfilling` (objective mix "
            f"token/sentence/document = {settings.objective_probs}, mask ratio {settings.mask_ratio}) and the "
            f"stock `Trainer`: {settings.max_steps} steps of {settings.batch_size} packed rows of "
            f"{settings.row_length} tokens, learning rate {settings.learning_rate}, cosine schedule, seed "
            f"{settings.seed}. Final training loss {result.final_loss:.3f}; curve in `loss_curve.png`."
        ),
        evaluation=(
            f"Greedy blank filling on {sum(t for _, t in result.per_kind.values())} held-out fact sentences "
            f"that never appear in the training text: exact match **{result.exact_match:.3f}**, against "
            f"{result.baseline:.3f} for always answering the most frequent training answer of the same kind "
            "and language.\n\n" + "\n".join(table)
        ),
        intended_use="A demonstration of glm-hf's pretraining stack and a small base for its fine-tuning examples.",
        limitations=(
            "Not a useful language model: it knows only the embedded corpus (capitals, elements, single-digit "
            "arithmetic, months and weekdays, their translations)."
        ),
        metrics=["exact_match"],
    )


__all__ = [
    "DemoEvaluationError",
    "DemoResult",
    "DemoSettings",
    "evaluate_demo_model",
    "load_demo_tokenizer",
    "run_demo",
    "train_demo_tokenizer",
]
