"""DataCollatorForBlankInfilling: layout invariants (hypothesis), objectives, bad input, determinism, Trainer use."""

import math
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from glm_hf import GLMTokenizer
from glm_hf.model.blank_infilling import build_attention_mask, part_a_length
from glm_hf.training.collator import DataCollatorForBlankInfilling
from glm_hf.training.seq2seq import DataCollatorForGLMSeq2Seq
from tests.helpers.tiny import GMASK, MASK, SMASK, tiny_model

CORPUS = ["The capital of France is Paris. The capital of Japan is Tokyo! Is it? 北京是中国的首都。东京呢？"] * 40


@pytest.fixture(scope="module")
def tokenizer() -> GLMTokenizer:
    return GLMTokenizer.train_bpe(CORPUS, vocab_size=400)


def collator(tokenizer, objective: int, **kwargs) -> DataCollatorForBlankInfilling:
    probs = tuple(1.0 if i == objective else 0.0 for i in range(3))
    return DataCollatorForBlankInfilling(tokenizer, objective_probs=probs, seed=kwargs.pop("seed", 0), **kwargs)


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fails the block with a TimeoutError after `seconds`: a hang becomes a test failure instead of a stuck run."""

    def fail(signum, frame):
        raise TimeoutError(f"the collator ran for more than {seconds} s on one example: it hangs")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def blank_pattern(batch: dict) -> torch.Tensor:
    """Where a batch's blanks sit (`[MASK]`, `[sMASK]`, `[gMASK]` in Part A): equal for equal draws."""
    return torch.isin(batch["input_ids"], torch.tensor([MASK, SMASK, GMASK]))


def reconstruct(row: dict, blank_ids: set[int], sop: int, eop: int) -> list[int]:
    """The original text from a layout: every blank replaced by the span whose positions point at it."""
    ids, labels, positions = row["input_ids"], row["labels"], row["position_ids"]
    sep = int(row["sep"])
    spans: dict[int, list[int]] = {}
    for i in range(sep, len(ids)):
        if labels[i] != -100 and labels[i] != eop:
            spans.setdefault(int(positions[0, i]), []).append(int(labels[i]))
        elif labels[i] == eop:
            spans.setdefault(int(positions[0, i]), [])
    text = []
    for i in range(sep):
        text += spans.pop(i) if int(ids[i]) in blank_ids and i in spans else [int(ids[i])]
    assert not spans, "every span must fill a blank of Part A"
    return text


@settings(max_examples=150, deadline=2000)
@given(
    words=st.lists(st.integers(9, 300), min_size=1, max_size=300), objective=st.integers(0, 2), seed=st.integers(0, 99)
)
def test_layout_invariants(tokenizer, words, objective, seed):
    data = collator(tokenizer, objective, seed=seed)
    ids = np.asarray([tokenizer.cls_token_id, *words, tokenizer.eos_token_id])
    row = data.layout(ids)
    sop, eop, blanks = tokenizer.sop_token_id, tokenizer.eop_token_id, set(tokenizer.mask_token_ids)
    input_ids, labels, positions, sep = row["input_ids"], row["labels"], row["position_ids"], int(row["sep"])

    assert reconstruct(row, blanks, sop, eop) == ids.tolist()
    assert input_ids[0] == tokenizer.cls_token_id and input_ids[sep - 1] == tokenizer.eos_token_id
    assert part_a_length(torch.as_tensor(input_ids)[None], sop).item() == sep
    masked = int((labels != -100).sum()) - int((labels == eop).sum())
    n = len(words)
    if objective == 0:
        assert masked == math.ceil(0.15 * n)
    elif objective == 1:
        assert masked >= 0.15 * n and masked > 0
    else:
        assert max(1, math.floor(0.5 * n)) <= masked <= n
    assert (positions[0, :sep] == np.arange(sep)).all() and (positions[1, :sep] == 0).all()
    starts = np.flatnonzero(input_ids[sep:] == sop) + sep
    for start, end in zip(starts, [*starts[1:], len(input_ids)][: len(starts)], strict=True):
        blank = positions[0, start]
        assert input_ids[blank] in blanks and (positions[0, start:end] == blank).all()
        assert (positions[1, start:end] == np.arange(1, end - start + 1)).all()
        assert (labels[start : end - 1] == input_ids[start + 1 : end]).all() and labels[end - 1] == eop
    mask = build_attention_mask(torch.tensor([sep]), len(input_ids), len(input_ids))[0, 0]
    q, k = np.meshgrid(np.arange(len(input_ids)), np.arange(len(input_ids)), indexing="ij")
    assert (mask.numpy() == ((k < sep) | (k <= q))).all()


@settings(max_examples=80, deadline=2000)
@given(
    words=st.lists(st.integers(9, 300), min_size=1, max_size=200),
    objective=st.integers(0, 2),
    max_length=st.integers(8, 64),
)
def test_max_length_keeps_a_valid_layout_of_the_text_start(tokenizer, words, objective, max_length):
    ids = np.asarray([tokenizer.cls_token_id, *words, tokenizer.eos_token_id])
    row = collator(tokenizer, objective, max_length=max_length).layout(ids)
    assert len(row["input_ids"]) <= max_length
    text = reconstruct(row, set(tokenizer.mask_token_ids), tokenizer.sop_token_id, tokenizer.eop_token_id)
    kept = len(text) - 2
    assert text == [tokenizer.cls_token_id, *words[:kept], tokenizer.eos_token_id]


@settings(max_examples=300, deadline=2000)
@given(
    lead=st.lists(st.integers(0, 2), max_size=12),
    words=st.lists(st.integers(9, 300), max_size=60),
    trail=st.lists(st.integers(0, 2), max_size=12),
    objective=st.integers(0, 2),
    max_length=st.one_of(st.none(), st.integers(8, 32)),
    mask_ratio=st.floats(0.05, 0.5),
    poisson_lambda=st.floats(0.2, 6.0),
    seed=st.integers(0, 99),
)
def test_no_input_hangs_or_comes_out_without_a_blank(
    tokenizer, lead, words, trail, objective, max_length, mask_ratio, poisson_lambda, seed
):
    """Runs of [CLS] / eos / padding at both ends, padded rows, tiny max_length, high mask ratios: the collator either
    lays the row out with at least one blank or raises a ValueError saying why."""
    ends = (tokenizer.cls_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    prefix, suffix = [ends[i] for i in lead], [ends[i] for i in trail]
    ids = [*prefix, *words, *suffix]
    data = collator(
        tokenizer, objective, seed=seed, max_length=max_length, mask_ratio=mask_ratio, poisson_lambda=poisson_lambda
    )
    if not words or (max_length is not None and len(prefix) + len(suffix) + 3 > max_length):
        message = "empty input_ids" if not ids else "no text to blank" if not words else "Raise max_length"
        with time_limit(10), pytest.raises(ValueError, match=f"example 0.*{message}"):
            data([{"input_ids": ids}])
        return
    with time_limit(10):
        row = data.layout(np.asarray(ids))
    assert max_length is None or len(row["input_ids"]) <= max_length
    labels = row["labels"]
    assert ((labels != -100) & (labels != tokenizer.eop_token_id)).any(), "every row keeps at least one blank"
    text = reconstruct(row, set(tokenizer.mask_token_ids), tokenizer.sop_token_id, tokenizer.eop_token_id)
    kept = len(text) - len(prefix) - len(suffix)
    assert kept >= 1 and text == [*prefix, *words[:kept], *suffix]


def test_small_max_length_and_high_mask_ratio_keep_a_blank_in_every_row(tokenizer):
    ids = tokenizer(CORPUS[0])["input_ids"]
    for seed in range(5):
        data = collator(tokenizer, 0, seed=seed, max_length=8, mask_ratio=0.5, poisson_lambda=1.0)
        batch = data([{"input_ids": ids}] * 8)
        assert blank_pattern(batch).any(dim=1).all(), f"seed {seed}: a row came out without blanks"
        assert (batch["attention_mask"] > 0).all() and batch["input_ids"].shape[1] <= 8


def test_a_row_of_separators_alone_is_refused(tokenizer):
    """A row of only eos separators has no text to blank (`pack_documents` never makes one)."""
    eos = tokenizer.eos_token_id
    with pytest.raises(ValueError, match="example 1: all its 1 input_ids are special tokens"):
        collator(tokenizer, 0, max_length=8)([{"input_ids": [11, 12, 13, 14, 15, eos]}, {"input_ids": [eos]}])


def test_rows_that_cannot_fit_max_length_raise_a_clear_error(tokenizer):
    pad, cls, eos = tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.eos_token_id
    data = collator(tokenizer, 0, max_length=8)
    padded = [cls, 20, 21, eos] + [pad] * 12  # padded by the tokenizer to a fixed length
    with time_limit(10), pytest.raises(ValueError, match=r"example 1: .*1 leading, 13 trailing.* at least 17"):
        data([{"input_ids": [cls, 20, 21, eos]}, {"input_ids": padded}])
    with time_limit(10), pytest.raises(ValueError, match=r"example 0: .*leading.*Raise max_length"):
        data([{"input_ids": [cls] * 20 + [20] + [eos] * 20}])


@pytest.mark.parametrize(
    "examples, message",
    [
        ([], "empty batch"),
        ([{"input_ids": [11, 12]}, {"input_ids": []}], "example 1 has empty input_ids"),
        ([{"attention_mask": [1, 1]}], "example 0 has no input_ids"),
        ([{"input_ids": [[11, 12], [13, 14]]}], "example 0: input_ids must be one flat list"),
        ([{"input_ids": [11.5, 12.0]}], "example 0: input_ids must be one flat list of integer"),
        ([{"input_ids": [2, 3]}], "example 0: all its 2 input_ids are special tokens"),
        ([{"input_ids": [0, 0, 0, 0]}], "no text to blank"),
        ([{"input_ids": [11, 12]}, {"input_ids": [11, -1]}], "example 1: input_ids hold ids outside"),
        ([{"input_ids": [11, 12, 13], "sentence_ends": ["3"]}], "example 0: sentence_ends must be increasing"),
    ],
)
def test_bad_examples_raise_naming_the_example(tokenizer, examples, message):
    with pytest.raises(ValueError, match=message):
        collator(tokenizer, 0)(examples)


def test_objectives_use_their_blank_token(tokenizer):
    ids = np.asarray(tokenizer(CORPUS[0])["input_ids"])
    for objective, blank in enumerate(tokenizer.mask_token_ids):
        row = collator(tokenizer, objective).layout(ids)
        used = set(row["input_ids"][: row["sep"]].tolist()) & set(tokenizer.mask_token_ids)
        assert used == {blank}


def test_sentence_objective_masks_whole_sentences(tokenizer):
    text = "The capital of France is Paris. The capital of Japan is Tokyo! Is it? 北京是中国的首都。"
    ids = np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"])
    sentences = [
        "The capital of France is Paris.",
        " The capital of Japan is Tokyo!",
        " Is it?",
        " 北京是中国的首都。",
    ]
    for seed in range(10):
        row = collator(tokenizer, 1, seed=seed).layout(ids)
        spans = tokenizer.decode(row["labels"][row["labels"] != -100].tolist()).split("<|endofpiece|>")[:-1]
        assert spans and all(span in sentences for span in spans)


def test_ids_outside_the_vocabulary_are_rejected(tokenizer):
    assert len(tokenizer) > 300  # the property tests draw word ids from 9..300
    with pytest.raises(ValueError, match="outside the tokenizer's vocabulary"):
        collator(tokenizer, 0)([{"input_ids": [11, len(tokenizer), 12]}])


def test_sentence_boundaries_from_the_dataset_override_punctuation(tokenizer):
    ids = [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]  # no punctuation at all
    for seed in range(10):
        data = collator(tokenizer, 1, mask_ratio=0.3, seed=seed)
        batch = data([{"input_ids": ids, "sentence_ends": [3, 7, 10]}])
        spans, span = [], []
        for token in batch["labels"][0][batch["labels"][0] != -100].tolist():
            spans, span = (spans + [span], []) if token == 8 else (spans, span + [token])
        assert spans and all(span in ([11, 12, 13], [14, 15, 16, 17], [18, 19, 20]) for span in spans)
    with pytest.raises(ValueError, match="sentence_ends must be increasing"):
        data([{"input_ids": ids, "sentence_ends": [5, 3]}])
    with pytest.raises(ValueError, match=r"in 1\.\.10"):
        data([{"input_ids": ids, "sentence_ends": [3, 11]}])


def test_same_seed_same_batches_and_spans_are_shuffled(tokenizer):
    examples = [{"input_ids": tokenizer(CORPUS[0])["input_ids"]}] * 4
    first = collator(tokenizer, 0, seed=3)(examples)
    second = collator(tokenizer, 0, seed=3)(examples)
    for name in first:
        assert torch.equal(first[name], second[name])
    unshuffled = collator(tokenizer, 0, seed=3, shuffle_spans=False)(examples)
    blank_positions = unshuffled["position_ids"][0, 0][unshuffled["input_ids"][0] == tokenizer.sop_token_id]
    assert (blank_positions.diff() > 0).all()


def test_numpy_batches_equal_torch_batches(tokenizer):
    examples = [{"input_ids": tokenizer(text)["input_ids"]} for text in CORPUS[:3]]
    torch_batch = collator(tokenizer, 0, pad_to_multiple_of=8)(examples)
    numpy_batch = collator(tokenizer, 0, pad_to_multiple_of=8, return_tensors="np")(examples)
    assert numpy_batch.keys() == torch_batch.keys()
    for name, array in numpy_batch.items():
        assert isinstance(array, np.ndarray) and (array == torch_batch[name].numpy()).all()


def test_blanks_are_a_function_of_the_seed_and_the_batch(tokenizer):
    rng = np.random.default_rng(0)
    batches = [[{"input_ids": rng.integers(9, 300, size=40).tolist()} for _ in range(4)] for _ in range(3)]
    first = [collator(tokenizer, 0, seed=3)(batch) for batch in batches]
    data = collator(tokenizer, 0, seed=3)
    again = [data(batch) for batch in reversed(batches)][::-1]  # another order, one collator for all calls
    for one, other in zip(first, again, strict=True):
        for name in one:
            assert torch.equal(one[name], other[name])
    assert torch.equal(data(batches[0])["labels"], first[0]["labels"])  # calling twice changes nothing
    other_seed = collator(tokenizer, 0, seed=4)(batches[0])
    assert not torch.equal(blank_pattern(other_seed), blank_pattern(first[0]))
    alone = data.layout(np.asarray(batches[0][0]["input_ids"]))  # `layout` is a batch of one example
    assert (data(batches[0][:1])["labels"][0].numpy() == alone["labels"]).all()


def test_dataloader_workers_draw_independent_blanks(tokenizer):
    """Each worker holds a copy of the collator: still, no two batches share their blanks, and the batches are
    those of a loader without workers."""
    rng = np.random.default_rng(0)
    rows = [{"input_ids": [tokenizer.cls_token_id, *rng.integers(9, 300, size=40).tolist()]} for _ in range(8)]
    data = collator(tokenizer, 0, seed=0)
    loaded = {
        workers: list(torch.utils.data.DataLoader(rows, batch_size=2, num_workers=workers, collate_fn=data))
        for workers in (0, 2)
    }
    patterns = [blank_pattern(batch) for batch in loaded[2]]
    assert not any(torch.equal(patterns[i], patterns[j]) for i in range(4) for j in range(i))
    for without, with_workers in zip(loaded[0], loaded[2], strict=True):
        for name in without:
            assert torch.equal(without[name], with_workers[name])


def test_batch_shape_padding_and_max_length(tokenizer):
    long = tokenizer(" ".join(CORPUS[:10]))["input_ids"]
    data = collator(tokenizer, 0, max_length=40, pad_to_multiple_of=8)
    batch = data([{"input_ids": long}, {"input_ids": long[:5]}])
    assert batch["input_ids"].shape == (2, 40) and batch["position_ids"].shape == (
        2,
        2,
        40,
    )  # fixed seed: rows fill to near max_length
    assert batch["attention_mask"].shape == (2,)
    assert (batch["labels"][1, batch["attention_mask"][1] :] != -100).any()


def test_batches_train_a_model(tokenizer):
    # Seed 1: the loss ratio after 30 steps varies with the drawn blanks (0.04 to 0.32 over seeds 0..7).
    data = DataCollatorForBlankInfilling(tokenizer, objective_probs=(0.5, 0.25, 0.25), seed=1, max_length=64)
    batch = data([{"input_ids": tokenizer(text)["input_ids"]} for text in CORPUS[:4]])
    model = tiny_model(vocab_size=len(tokenizer), max_position_embeddings=128).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mask_ratio=0.7), "mask_ratio"),
        (dict(objective_probs=(0.5, 0.2, 0.2)), "objective_probs"),
        (dict(document_min_ratio=0.0), "document_min_ratio"),
        (dict(max_length=4), "max_length"),
        (dict(max_length=16.0), "max_length must be None or an integer"),
        (dict(poisson_lambda=0.0), "poisson_lambda"),
        (dict(poisson_lambda=-1.0), "poisson_lambda"),
        (dict(max_span_length=0), "max_span_length must be an integer >= 1"),
        (dict(pad_to_multiple_of=0), "pad_to_multiple_of must be None or an integer >= 1"),
        (dict(pad_to_multiple_of=-8), "pad_to_multiple_of"),
        (dict(return_tensors="tf"), "return_tensors must be 'pt'"),
        (dict(seed=-1), "seed must be None or an integer >= 0"),
        (dict(sentence_end_token_ids=[10**6]), "sentence_end_token_ids must be ids of the tokenizer's vocabulary"),
    ],
)
def test_bad_settings_raise(tokenizer, kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataCollatorForBlankInfilling(tokenizer, **kwargs)


@pytest.mark.parametrize("collator", [DataCollatorForBlankInfilling, DataCollatorForGLMSeq2Seq])
@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_a_tokenizer_without_the_glm_tokens_is_refused_at_construction(kind, collator):
    """A GPT-2 or BERT tokenizer has no [sMASK], [gMASK], <|startofpiece|> or <|endofpiece|>; the collators said so
    only with an AttributeError (`smask_token_id`, at the first batch for seq2seq)."""
    vocab = {"[PAD]": 0, "[UNK]": 1, "[MASK]": 2, "<|endoftext|>": 3, "Paris": 4, "Tokyo": 5}
    if kind == "gpt2":
        backend = Tokenizer(models.BPE(vocab, [], unk_token="[UNK]"))
        other = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", unk_token="[UNK]")
        missing = "mask_token, smask_token, gmask_token, sop_token, eop_token, pad_token"
    else:
        backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
        other = PreTrainedTokenizerFast(
            tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", mask_token="[MASK]"
        )
        missing = "smask_token, gmask_token, sop_token, eop_token"
    with pytest.raises(
        ValueError, match=f"{collator.__name__} needs a GLM tokenizer.*has no {missing}\\..*GLMTokenizer"
    ):
        collator(other)


def test_stock_trainer_pretrains_with_the_collator(tokenizer, tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    dataset = Dataset.from_dict({"input_ids": [tokenizer(text)["input_ids"] for text in CORPUS[:16]]})
    model = tiny_model(vocab_size=len(tokenizer), max_position_embeddings=128)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=40,
        per_device_train_batch_size=8,
        learning_rate=5e-3,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=5,
        seed=0,
    )
    data = DataCollatorForBlankInfilling(tokenizer, objective_probs=(0.6, 0.2, 0.2), seed=0, max_length=96)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=data)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses[-1] < 0.6 * losses[0]
