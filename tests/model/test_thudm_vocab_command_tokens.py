"""Command-token strings typed in text, and the task masks each THUDM vocabulary has.

THUDM's tokenizer (THUDM/GLM `data_utils/tokenization.py`, `Tokenizer.EncodeAsIds` and its `split_on_tokens`) cuts
the text at every command-token string of the vocabulary, gives each its id, drops the whitespace left of an
`lstrip` token (the blanks) and encodes every chunk alone with the plain text tokenizer; any other string is text.
Which command tokens exist is set per vocabulary in `BertWordPieceTokenizer`, `GPT2BPETokenizer` and
`ChineseSPTokenizer`: `[gMASK]`/`[sMASK]` only with `--task-mask`, which the released BERT and RoBERTa GLMs do not
use (`config_tasks/model_blocklm_large.sh`, `model_blocklm_roberta_large.sh`; GLM-10B, GLM-2B and the Chinese GLMs
do). Without task masks THUDM uses `[MASK]` for every blank (`blocklm_utils.py`: the gap-sentence and generation
masks are 'MASK'). The command-token tables below are written out from those constructors, not taken from glm_hf.
"""

import json
import re
from pathlib import Path

import pytest
from transformers import BertTokenizer, GPT2Tokenizer, RobertaTokenizer

from glm_hf.convert.vocab import bert_tokenizer, cog_sentencepiece_tokenizer, gpt2_tokenizer, roberta_tokenizer
from tests.helpers.paths import THUDM_VOCAB

FIXTURES = THUDM_VOCAB
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"THUDM vocabulary fixtures not found at {FIXTURES}")

TEXTS = [
    "Paris is [MASK]. Tokyo is [sMASK] and then [gMASK]",
    "[CLS] a [SEP] b <|endoftext|> c [UNK] d [PAD] e",
    "x <|startofpiece|> y <|endofpiece|> z [MASK][gMASK]",
    "<s> one </s> two <mask> three",
]
BLANKS = {"[MASK]", "[sMASK]", "[gMASK]", "<mask>"}  # the lstrip command tokens

# GPT2BPETokenizer, GPT-2 vocabulary, add_block_symbols and add_task_mask (GLM-2B, GLM-10B).
GPT2_COMMANDS = {
    "<|endoftext|>": 50256, "<|startofpiece|>": 50257, "<|endofpiece|>": 50258, "[CLS]": 50259, "[MASK]": 50260,
    "[SEP]": 50261, "[UNK]": 50262, "[gMASK]": 50263, "[sMASK]": 50264,
}  # fmt: skip
# BertWordPieceTokenizer with add_block_symbols, without add_task_mask (GLM-Base, GLM-Large, GLM-410M/515M).
BERT_COMMANDS = {
    "[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, "<|startofpiece|>": 30522,
    "<|endofpiece|>": 30523,
}  # fmt: skip
# ChineseSPTokenizer with add_block_symbols, add_task_mask and fix_command_token (GLM-Large-Chinese), less `[UNK]`
# (50004 there): glm-hf keeps the Hub tokenizer's `[UNUSED1]` at 50004, see the documented differences below.
COG_COMMANDS = {
    "<|endoftext|>": 50000, "[SEP]": 50001, "[CLS]": 50002, "[MASK]": 50003, "<|startofpiece|>": 50006,
    "<|endofpiece|>": 50007, "[sMASK]": 50008, "[gMASK]": 50009,
}  # fmt: skip
# RoBERTa follows THUDM's Hub tokenizer (`GLMRobertaTokenizer`, a `RobertaTokenizer` plus sop/eop, no task masks):
# fairseq's own special strings. THUDM's training code spells them `[CLS]`, `[SEP]`, `[MASK]`, `[UNK]`,
# `<|endoftext|>` instead (see test_documented_differences_from_thudms_training_tokenizer).
ROBERTA_COMMANDS = {
    "<s>": 0,
    "</s>": 2,
    "<unk>": 3,
    "<mask>": 50264,
    "<|startofpiece|>": 50265,
    "<|endofpiece|>": 50266,
}


def thudm_encode(text: str, commands: dict[str, int], encode_chunk, first: int, last: int) -> list[int]:
    """`first` + THUDM's `EncodeAsIds` of `text` with the command tokens `commands` + `last`."""
    pattern = "(" + "|".join(re.escape(token) for token in sorted(commands, key=len, reverse=True)) + ")"
    pieces = re.split(pattern, text)
    ids = [first]
    for i, piece in enumerate(pieces):
        if piece in commands:
            ids.append(commands[piece])
            continue
        if i + 1 < len(pieces) and pieces[i + 1] in BLANKS:
            piece = piece.rstrip()
        if piece:
            ids += encode_chunk(piece)
    return ids + [last]


def _merges(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split()) for line in path.read_text(encoding="utf-8").split("\n")[1:] if line]


def _hf_encoder(tokenizer):
    return lambda chunk: tokenizer(chunk, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def vocabularies():
    """Per vocabulary: glm-hf's imported tokenizer, its command tokens, a plain chunk encoder, and first/last ids."""
    spm = pytest.importorskip("sentencepiece")
    gpt2_files = [FIXTURES / "gpt2-vocab.json", FIXTURES / "gpt2-merges.txt"]
    roberta_files = [FIXTURES / "roberta-vocab.json", FIXTURES / "roberta-merges.txt"]
    bert_file, cog_file = FIXTURES / "bert-large-uncased-vocab.txt", str(FIXTURES / "cog-pretrain.model")
    gpt2 = GPT2Tokenizer(vocab=json.loads(gpt2_files[0].read_text(encoding="utf-8")), merges=_merges(gpt2_files[1]))
    roberta = RobertaTokenizer(
        vocab=json.loads(roberta_files[0].read_text(encoding="utf-8")), merges=_merges(roberta_files[1])
    )
    bert = BertTokenizer(
        vocab={token: i for i, token in enumerate(bert_file.read_text(encoding="utf-8").split("\n")) if token}
    )
    return {
        "gpt2": (gpt2_tokenizer(*map(str, gpt2_files)), GPT2_COMMANDS, _hf_encoder(gpt2), 50259, 50256),
        "bert": (bert_tokenizer(str(bert_file)), BERT_COMMANDS, _hf_encoder(bert), 101, 102),
        "roberta": (roberta_tokenizer(*map(str, roberta_files)), ROBERTA_COMMANDS, _hf_encoder(roberta), 0, 2),
        "cog": (
            cog_sentencepiece_tokenizer(cog_file),
            COG_COMMANDS,
            spm.SentencePieceProcessor(model_file=cog_file).encode,
            50002,
            50000,
        ),
    }


@pytest.mark.parametrize("name", ["gpt2", "bert", "roberta", "cog"])
@pytest.mark.parametrize("text", TEXTS)
def test_command_token_strings_in_text_tokenize_as_thudm(vocabularies, name, text):
    """Issue 18: the BERT and RoBERTa importers turned `[sMASK]`/`[gMASK]` into ids THUDM's tokenizers lack."""
    tokenizer, commands, encode_chunk, first, last = vocabularies[name]
    assert tokenizer(text)["input_ids"] == thudm_encode(text, commands, encode_chunk, first, last)


@pytest.mark.parametrize(("name", "mask"), [("bert", 103), ("roberta", 50264)])
def test_vocabularies_without_task_masks_use_the_mask_for_every_blank(vocabularies, name, mask):
    """THUDM's BERT/RoBERTa GLMs have one blank token; the sMASK and gMASK roles (collator objectives, the causal
    prefix, generation of plain prompts) take it, as THUDM's pretraining does without --task-mask. Their rows
    30524/30525 (BERT) and 50267/50268 (RoBERTa) stay padding rows of the embedding, as in THUDM's checkpoints."""
    tokenizer = vocabularies[name][0]
    assert tokenizer.mask_token_id == tokenizer.smask_token_id == tokenizer.gmask_token_id == mask
    assert tokenizer.mask_token_ids == [mask] * 3
    assert len(tokenizer) == {"bert": 30524, "roberta": 50267}[name]


def test_documented_differences_from_thudms_training_tokenizer(vocabularies):
    """The differences README states ("THUDM vocabularies"). Where THUDM's Hub tokenizer and its training code
    disagree, glm-hf follows the Hub one: RoBERTa's `[MASK]`, `[CLS]`, `[SEP]`, `<|endoftext|>` (training code:
    50264, 0, 2, 2) are text, and the cog vocabulary's id 50004 is `[UNUSED1]` (training code: `[UNK]`, so `[UNK]`
    typed in text is text). The cog tokenizer's unknown token `<unk>` typed in text is id 0 (SentencePiece: text)."""
    roberta, _, encode_roberta, _, _ = vocabularies["roberta"]
    for text in ("[MASK]", "[CLS]", "[SEP]", "<|endoftext|>"):
        assert roberta(text, add_special_tokens=False)["input_ids"] == encode_roberta(text)
    cog, _, encode_cog, _, _ = vocabularies["cog"]
    assert cog("[UNK]", add_special_tokens=False)["input_ids"] == encode_cog("[UNK]")
    assert cog.convert_tokens_to_ids("[UNUSED1]") == 50004
    assert cog("<unk>", add_special_tokens=False)["input_ids"] == [0] != encode_cog("<unk>")


def test_cog_control_pieces_typed_in_text_are_text_and_user_defined_pieces_match(vocabularies):
    """SentencePiece reads its control pieces `<s>`/`</s>` in text as characters (the importer had made them
    tokens, ids 1 and 2) and matches its user-defined piece `<n>` (id 3)."""
    cog, _, encode_cog, _, _ = vocabularies["cog"]
    for text in ("a <s> b", "x </s>"):
        assert cog(text, add_special_tokens=False)["input_ids"] == encode_cog(text)
    assert 3 in cog("a<n>b", add_special_tokens=False)["input_ids"]
