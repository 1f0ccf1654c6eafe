"""Command-token strings typed in text, and the task masks each THUDM vocabulary has.

THUDM's tokenizer (THUDM/GLM `data_utils/tokenization.py`, `Tokenizer.EncodeAsIds` and its `split_on_tokens`) cuts
the text at every command-token string of the vocabulary, gives each its id, drops the whitespace left of an
`lstrip` token (the blanks) and encodes every chunk alone with the plain text tokenizer; any other string is text.
Which command tokens exist is set per vocabulary in `BertWordPieceTokenizer`, `GPT2BPETokenizer` and
`ChineseSPTokenizer`: `[gMASK]`/`[sMASK]` only with `--task-mask`, which the released BERT and RoBERTa GLMs do not
use (`config_tasks/model_blocklm_large.sh`, `model_blocklm_roberta_large.sh`; GLM-10B, GLM-2B and the Chinese GLMs
do). Without task masks THUDM uses `[MASK]` for every blank (`blocklm_utils.py`: the gap-sentence and generation
masks are 'MASK'). The command-token tables below are written out from those constructors, not taken from glm_hf.

`REFERENCE` holds ids produced by running that THUDM code itself on the fixture vocabularies
(`scripts/thudm_reference_ids.py`; THUDM/GLM at commit 4f61ed7237a3b0187f4d62062429348276a78c84, `EncodeAsIds`).
"""

import json
import re
from pathlib import Path

import pytest
from transformers import AutoTokenizer, BertTokenizer, GPT2Tokenizer

from glm_hf.convert.vocab import bert_tokenizer, cog_sentencepiece_tokenizer, gpt2_tokenizer, roberta_tokenizer
from tests.helpers.paths import REPO, THUDM_VOCAB

FIXTURES = THUDM_VOCAB
REFERENCE = REPO / "tests" / "fixtures" / "thudm-command-token-ids.json"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"THUDM vocabulary fixtures not found at {FIXTURES}")

TEXTS = [
    "Paris is [MASK]. Tokyo is [sMASK] and then [gMASK]",
    "[CLS] a [SEP] b <|endoftext|> c [UNK] d [PAD] e",
    "x <|startofpiece|> y <|endofpiece|> z [MASK][gMASK]",
    "<s> one </s> two <mask> three",
]
BLANKS = {"[MASK]", "[sMASK]", "[gMASK]"}  # the lstrip command tokens

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
# ChineseSPTokenizer with add_block_symbols, add_task_mask and fix_command_token (GLM-Large-Chinese).
COG_COMMANDS = {
    "<|endoftext|>": 50000, "[SEP]": 50001, "[CLS]": 50002, "[MASK]": 50003, "[UNK]": 50004,
    "<|startofpiece|>": 50006, "<|endofpiece|>": 50007, "[sMASK]": 50008, "[gMASK]": 50009,
}  # fmt: skip
# GPT2BPETokenizer, RoBERTa vocabulary, add_block_symbols, without add_task_mask (GLM-RoBERTa): fairseq's `<s>`,
# `</s>`, `<unk>`, `<mask>` ids under THUDM's command strings; fairseq's own strings are text.
ROBERTA_COMMANDS = {
    "<|endoftext|>": 2, "[SEP]": 2, "[CLS]": 0, "[MASK]": 50264, "[UNK]": 3, "<|startofpiece|>": 50265,
    "<|endofpiece|>": 50266,
}  # fmt: skip


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
    # THUDM encodes RoBERTa's text with a plain GPT-2 BPE, to which fairseq's `<s>`, `<mask>`, ... are characters.
    roberta = GPT2Tokenizer(
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


@pytest.mark.parametrize("name", ["gpt2", "bert", "roberta", "cog"])
def test_every_special_string_gives_the_ids_thudms_training_tokenizer_gives(vocabularies, name, tmp_path):
    """Issue 29: THUDM's own tokenizer, run on the fixture vocabularies, against glm-hf on texts holding every special
    string of every GLM vocabulary, as imported and as saved and reloaded. The RoBERTa importer kept `[CLS]`,
    `[SEP]`, `[UNK]`, `[MASK]`, `<|endoftext|>` as text and made fairseq's `<s>`, `</s>`, `<unk>`, `<mask>` tokens;
    the cog importer split `[UNK]` (THUDM's 50004) into SentencePiece pieces and made `[UNUSED1]`, `[UNUSED2]` and
    `<unk>` tokens."""
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
    tokenizer = vocabularies[name][0]
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    for text, ids in zip(reference["texts"], reference["ids"][name], strict=True):
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == ids, text
        assert reloaded(text, add_special_tokens=False)["input_ids"] == ids, text


def test_roberta_has_two_strings_for_id_2_and_plain_text_keeps_them_text(vocabularies):
    """THUDM's RoBERTa tokenizer has `<|endoftext|>` (eos, pad) and `[SEP]` at fairseq's `</s>` 2; id 2 reads back
    as `[SEP]`, as THUDM's decoder writes it. Plain-text encoding gives neither string an id."""
    roberta, _, encode_roberta, _, _ = vocabularies["roberta"]
    assert roberta("<|endoftext|>[SEP]", add_special_tokens=False)["input_ids"] == [2, 2]
    assert (roberta.eos_token_id, roberta.pad_token_id, roberta.sep_token_id, roberta.cls_token_id) == (2, 2, 2, 0)
    assert roberta.decode([2]) == "[SEP]"
    for text in ("a <|endoftext|> b", "a [SEP] b", "<s> [CLS] </s>"):
        assert 2 not in roberta(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert roberta("<s> x", add_special_tokens=False)["input_ids"] == encode_roberta("<s> x")


def test_cog_unknown_token_is_thudms_and_its_unused_id_is_reached_by_no_text(vocabularies):
    """The cog tokenizer's unknown token is THUDM's `[UNK]` 50004 (SentencePiece still gives `<unk>` 0 to what it
    cannot encode); THUDM's tokenizer leaves 50005 unused, so its entry `[UNUSED2]` typed in text is text."""
    cog, _, encode_cog, _, _ = vocabularies["cog"]
    assert (cog.unk_token, cog.unk_token_id) == ("[UNK]", 50004)
    assert cog.convert_tokens_to_ids("[UNUSED2]") == 50005
    assert len(cog) == 50010
    for text in ("[UNUSED2]", "[UNUSED1]", "<unk>"):
        assert cog(text, add_special_tokens=False)["input_ids"] == encode_cog(text)


def test_cog_control_pieces_typed_in_text_are_text_and_user_defined_pieces_match(vocabularies):
    """SentencePiece reads its control pieces `<s>`/`</s>` in text as characters (the importer had made them
    tokens, ids 1 and 2) and matches its user-defined piece `<n>` (id 3)."""
    cog, _, encode_cog, _, _ = vocabularies["cog"]
    for text in ("a <s> b", "x </s>"):
        assert cog(text, add_special_tokens=False)["input_ids"] == encode_cog(text)
    assert 3 in cog("a<n>b", add_special_tokens=False)["input_ids"]
