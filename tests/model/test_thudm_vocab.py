"""THUDM vocabulary import: ids equal what THUDM's layout prescribes.

Expected ids are built independently of glm_hf: text chunks are encoded by a reference tokenizer (transformers'
GPT-2/RoBERTa/BERT tokenizers from the raw files, or the `sentencepiece` library), split at the blanks the way
THUDM's tokenizer splits text at command tokens (blanks strip whitespace on their left), and the special ids are
the documented THUDM numbers written out below.
"""

import json
import re
from pathlib import Path

import pytest
from transformers import AutoTokenizer, BertTokenizer, GPT2Tokenizer, RobertaTokenizer

from glm_hf import GLMTokenizer
from glm_hf.convert.vocab import (
    bert_tokenizer,
    cog_sentencepiece_tokenizer,
    gpt2_tokenizer,
    load_thudm_vocabulary,
    roberta_tokenizer,
)
from tests.helpers.paths import THUDM_VOCAB

FIXTURES = THUDM_VOCAB
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"THUDM vocabulary fixtures not found at {FIXTURES}")

SENTENCES = [
    "Tsinghua University is located in [MASK].",
    "The capital of France is [MASK], and the capital of Japan is [sMASK]",
    "Machine learning is a field of study [gMASK]",
    "清华大学位于[MASK]。",
    "中国的首都是北京，日本的首都是[MASK]！",
    "GLM 是一个通用语言模型 [gMASK]",
]


def merges(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split()) for line in path.read_text(encoding="utf-8").split("\n")[1:] if line]


def thudm_ids(text: str, encode_chunk, blank_ids: dict[str, int], first: int, last: int, lstrip: bool) -> list[int]:
    """`first` + the chunks between the vocabulary's blanks (each encoded alone) with the blank ids spliced in +
    `last`; a blank string the vocabulary lacks is text of its chunk."""
    ids = [first]
    pieces = re.split("(" + "|".join(map(re.escape, blank_ids)) + ")", text)
    for i, piece in enumerate(pieces):
        if piece in blank_ids:
            ids.append(blank_ids[piece])
            continue
        if lstrip and i + 1 < len(pieces):
            piece = piece.rstrip()
        if piece.strip():
            ids += encode_chunk(piece)
    return ids + [last]


@pytest.fixture(scope="module")
def gpt2_reference():
    vocab = json.loads((FIXTURES / "gpt2-vocab.json").read_text(encoding="utf-8"))
    reference = GPT2Tokenizer(vocab=vocab, merges=merges(FIXTURES / "gpt2-merges.txt"))
    return lambda text: reference(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("text", SENTENCES)
def test_gpt2_layout(text, gpt2_reference):
    tokenizer = gpt2_tokenizer(str(FIXTURES / "gpt2-vocab.json"), str(FIXTURES / "gpt2-merges.txt"))
    blanks = {"[MASK]": 50260, "[gMASK]": 50263, "[sMASK]": 50264}
    assert tokenizer(text)["input_ids"] == thudm_ids(text, gpt2_reference, blanks, 50259, 50256, lstrip=True)


def test_gpt2_special_token_ids():
    tokenizer = gpt2_tokenizer(str(FIXTURES / "gpt2-vocab.json"), str(FIXTURES / "gpt2-merges.txt"))
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.sop_token_id, tokenizer.eop_token_id) == (
        50256,
        50256,
        50257,
        50258,
    )
    assert (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.unk_token_id) == (50259, 50261, 50262)
    assert tokenizer.mask_token_ids == [50260, 50264, 50263]
    assert tokenizer("Tsinghua University is located in [MASK].")["input_ids"] == [
        50259, 51, 12215, 33061, 2059, 318, 5140, 287, 50260, 13, 50256,
    ]  # fmt: skip


@pytest.mark.parametrize("text", SENTENCES)
def test_roberta_layout(text):
    vocab = json.loads((FIXTURES / "roberta-vocab.json").read_text(encoding="utf-8"))
    reference = RobertaTokenizer(vocab=vocab, merges=merges(FIXTURES / "roberta-merges.txt"))
    tokenizer = roberta_tokenizer(str(FIXTURES / "roberta-vocab.json"), str(FIXTURES / "roberta-merges.txt"))
    blanks = {"[MASK]": 50264}  # THUDM's name for fairseq's <mask>; no task masks: [sMASK]/[gMASK] are text

    def encode(chunk):
        return reference(chunk, add_special_tokens=False)["input_ids"]

    assert tokenizer(text)["input_ids"] == thudm_ids(text, encode, blanks, 0, 2, lstrip=True)
    assert (tokenizer.sop_token_id, tokenizer.eop_token_id, tokenizer.pad_token_id) == (50265, 50266, 2)
    assert (tokenizer.cls_token, tokenizer.eos_token, tokenizer.mask_token) == ("[CLS]", "[SEP]", "[MASK]")


@pytest.mark.parametrize("text", SENTENCES)
def test_bert_layout(text):
    lines = (FIXTURES / "bert-large-uncased-vocab.txt").read_text(encoding="utf-8").split("\n")
    reference = BertTokenizer(vocab={token: i for i, token in enumerate(lines) if token})
    tokenizer = bert_tokenizer(str(FIXTURES / "bert-large-uncased-vocab.txt"))
    blanks = {"[MASK]": 103}  # no task masks: THUDM's BERT GLMs keep [sMASK]/[gMASK] as text

    def encode(chunk):
        return reference(chunk, add_special_tokens=False)["input_ids"]

    assert tokenizer(text)["input_ids"] == thudm_ids(text, encode, blanks, 101, 102, lstrip=False)
    assert (tokenizer.sop_token_id, tokenizer.eop_token_id, tokenizer.pad_token_id) == (30522, 30523, 0)


@pytest.mark.parametrize("text", SENTENCES)
def test_cog_sentencepiece_layout(text):
    spm = pytest.importorskip("sentencepiece")
    reference = spm.SentencePieceProcessor(model_file=str(FIXTURES / "cog-pretrain.model"))
    tokenizer = cog_sentencepiece_tokenizer(str(FIXTURES / "cog-pretrain.model"))
    blanks = {"[MASK]": 50003, "[sMASK]": 50008, "[gMASK]": 50009}
    assert tokenizer(text)["input_ids"] == thudm_ids(text, reference.encode, blanks, 50002, 50000, lstrip=True)
    assert (tokenizer.sop_token_id, tokenizer.eop_token_id, tokenizer.eos_token_id) == (50006, 50007, 50000)


def test_cog_sentencepiece_matches_sentencepiece_on_plain_text():
    spm = pytest.importorskip("sentencepiece")
    reference = spm.SentencePieceProcessor(model_file=str(FIXTURES / "cog-pretrain.model"))
    tokenizer = cog_sentencepiece_tokenizer(str(FIXTURES / "cog-pretrain.model"))
    for text in [" a  b\nc\td ", "ＦＵＬＬ　ｗｉｄｔｈ　１２３", "岿然不动", "Numbers 12345 and @#$%^&*()"]:
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == reference.encode(text)


def test_imported_tokenizer_saves_and_reloads(tmp_path):
    tokenizer = gpt2_tokenizer(str(FIXTURES / "gpt2-vocab.json"), str(FIXTURES / "gpt2-merges.txt"))
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, GLMTokenizer)
    for text in SENTENCES:
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.mask_token_ids == [50260, 50264, 50263]


def test_load_thudm_vocabulary_detects_the_format(tmp_path):
    assert load_thudm_vocabulary(str(FIXTURES)).sop_token_id == 50006  # cog-pretrain.model is there
    (tmp_path / "vocab.json").write_bytes((FIXTURES / "gpt2-vocab.json").read_bytes())
    (tmp_path / "merges.txt").write_bytes((FIXTURES / "gpt2-merges.txt").read_bytes())
    assert load_thudm_vocabulary(str(tmp_path)).sop_token_id == 50257
    with pytest.raises(FileNotFoundError, match="No THUDM vocabulary"):
        load_thudm_vocabulary(str(FIXTURES.parent))
