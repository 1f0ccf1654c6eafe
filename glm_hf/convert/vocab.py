"""Import THUDM's GLM vocabularies as `GLMTokenizer`s that give the ids THUDM's tokenizers give.

The ids follow the tokenizer the checkpoints were trained with, THUDM/GLM's `data_utils/tokenization.py` (the
Megatron-era `GPT2BPETokenizer`, `BertWordPieceTokenizer` and `ChineseSPTokenizer`, configured as each released GLM's
`config_tasks/model_blocklm_*.sh`), where THUDM's Hub `tokenization_glm.py` differs from it:

- GPT-2 BPE (glm-2b, glm-10b): text 0-50256; eos = pad `<|endoftext|>` 50256, sop 50257, eop 50258,
  `[CLS]` 50259, `[MASK]` 50260, `[SEP]` 50261, `[UNK]` 50262, `[gMASK]` 50263, `[sMASK]` 50264.
- RoBERTa BPE (glm-roberta-large): vocabulary 0-50264 (fairseq order); `[CLS]` 0, `[SEP]` and `<|endoftext|>` 2
  (eos, pad, sep), `[UNK]` 3, `[MASK]` 50264, sop 50265, eop 50266. No task masks (see below). fairseq's own
  strings (`<s>`, `</s>`, `<unk>`, `<mask>`, `<pad>`) are text, as THUDM's training tokenizer reads them (the Hub
  one takes them as tokens instead and reads `[CLS]`, `[SEP]`, `[UNK]`, `<|endoftext|>` as text).
- BERT WordPiece uncased (glm-base, glm-large, glm-410m/515m): text 0-30521; `[PAD]` 0, `[UNK]` 100, `[CLS]` 101,
  `[SEP]` 102 (eos), `[MASK]` 103, sop 30522, eop 30523. No task masks (see below).
- SentencePiece cog-pretrain (glm-large-chinese, glm-10b-chinese): text 0-49999; eos = pad `<|endoftext|>` 50000,
  `[SEP]` 50001, `[CLS]` 50002, `[MASK]` 50003, `[UNK]` 50004, sop 50006, eop 50007, `[sMASK]` 50008,
  `[gMASK]` 50009 (`--fix-command-token`). 50005 is unused by THUDM's tokenizer; it is the vocabulary entry
  `[UNUSED2]` here (the Hub's name), which no text reaches. The unknown token is `[UNK]`, as in THUDM's; pieces
  SentencePiece cannot encode are still its `<unk>` 0.

THUDM has `[sMASK]`/`[gMASK]` only for models trained with `--task-mask`; its BERT and RoBERTa GLMs were not, so
their tokenizers keep those strings as text (their embedding rows past eop are padding) and use `[MASK]` for every
blank. Here they stay text too, and the tokenizer's `smask_token`/`gmask_token` are the mask token, so sentence
blanks and left-to-right generation use it as THUDM does.

Special-token strings typed in text become their ids exactly where THUDM's training tokenizer has them as command
tokens (it cuts the text at them and encodes each chunk alone: in the byte-level BPE vocabularies the space before
one that does not strip it is a `Ġ` token of its own); other strings are text. Known differences in the cog
vocabulary: around its `<n>` piece the `▁` word starts differ from SentencePiece's (`a<n>b`: `▁a <n> ▁b`;
SentencePiece: `▁a <n> b`; ` <n>`: `<n>`; SentencePiece: `▁ <n>`).

Inputs are built as THUDM's Hub tokenizers build them: `[CLS] text <eos>` (BERT: `[CLS] text [SEP]`). Blank tokens
strip the whitespace on their left, as THUDM's `lstrip` command tokens do.
"""

import json
import os

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE, Unigram, WordPiece

from ..model.tokenization_glm import WHITESPACE_PIECES, GLMTokenizer
from ..model.transformers_compat import sentencepiece_extractor

BLANKS = ("[MASK]", "[sMASK]", "[gMASK]")


def _require(*paths: str) -> None:
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Vocabulary file not found: {path}")


def _add_specials(
    backend: Tokenizer, tokens: list[tuple[str, int]], lstrip_blanks: bool = True, normalized: bool = False
) -> None:
    """Adds special tokens so that each lands on its THUDM id; tokens already in the vocabulary keep theirs.
    THUDM's GLM tokenizers strip the whitespace left of a blank (`lstrip_blanks`); ChatGLM's do not. `normalized`
    tokens are matched in the normalized text, so a normalizer can rewrite a second string into one of them."""
    for token, expected in tokens:
        lstrip = lstrip_blanks and token in BLANKS
        backend.add_special_tokens([AddedToken(token, lstrip=lstrip, normalized=normalized)])
        actual = backend.token_to_id(token)
        if actual != expected:
            raise ValueError(
                f"{token!r} landed on id {actual}, but THUDM's layout puts it at {expected}: the vocabulary file "
                f"does not have the size this layout expects."
            )


def _template(backend: Tokenizer, first: str, last: str) -> None:
    backend.post_processor = processors.TemplateProcessing(
        single=f"{first} $A {last}",
        special_tokens=[(first, backend.token_to_id(first)), (last, backend.token_to_id(last))],
    )


def _byte_level_bpe(vocab_file: str, merges_file: str, renamed: dict[str, str] | None = None) -> Tokenizer:
    """A byte-level BPE tokenizer from GPT-2-style files, with the vocabulary entries in `renamed` renamed."""
    _require(vocab_file, merges_file)
    vocab, merges = BPE.read_file(vocab_file, merges_file)
    renamed = renamed or {}
    backend = Tokenizer(BPE({renamed.get(token, token): i for token, i in vocab.items()}, merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return backend


def gpt2_tokenizer(vocab_file: str, merges_file: str) -> GLMTokenizer:
    """GLM-2B / GLM-10B: GPT-2's BPE plus GLM's command tokens from id 50257."""
    backend = _byte_level_bpe(vocab_file, merges_file)
    specials = ["<|endoftext|>", "<|startofpiece|>", "<|endofpiece|>", "[CLS]", "[MASK]", "[SEP]", "[UNK]"]
    specials += ["[gMASK]", "[sMASK]"]
    _add_specials(backend, list(zip(specials, [50256, *range(50257, 50265)], strict=True)))
    _template(backend, "[CLS]", "<|endoftext|>")
    return GLMTokenizer.from_backend(
        backend,
        {"pad_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "[UNK]", "sep_token": "[SEP]"},
    )


def roberta_tokenizer(vocab_file: str, merges_file: str) -> GLMTokenizer:
    """GLM-RoBERTa: RoBERTa's BPE (fairseq order) with THUDM's training command tokens: `[CLS]` 0, `[SEP]` and
    `<|endoftext|>` 2, `[UNK]` 3, `[MASK]` 50264 (its one blank: no task masks, `[gMASK]`/`[sMASK]` are text),
    sop/eop from 50265. fairseq's `<s>`, `</s>`, `<unk>`, `<mask>` entries are renamed to THUDM's strings, so typed
    in text they are text, as THUDM's tokenizer reads them.

    `tokenizers` keeps one string per id, so `<|endoftext|>` reaches id 2 through a normalizer that rewrites it to
    `[SEP]` (matched in the normalized text). Two side effects: its offset mapping covers the literal's last
    character only (`tokenizers`' `Replace` alignment), and plain-text encoding (`split_special_tokens=True`) reads
    it as the text `[SEP]`."""
    renamed = {"<s>": "[CLS]", "</s>": "[SEP]", "<unk>": "[UNK]", "<mask>": "[MASK]"}
    backend = _byte_level_bpe(vocab_file, merges_file, renamed)
    backend.normalizer = normalizers.Replace("<|endoftext|>", "[SEP]")
    specials = [("[CLS]", 0), ("[SEP]", 2), ("[UNK]", 3), ("[MASK]", 50264)]
    specials += [("<|startofpiece|>", 50265), ("<|endofpiece|>", 50266)]
    _add_specials(backend, specials, normalized=True)
    _template(backend, "[CLS]", "[SEP]")
    names = {
        "pad_token": "[SEP]",
        "eos_token": "[SEP]",
        "unk_token": "[UNK]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
    }
    return GLMTokenizer.from_backend(backend, {**names, **_without_task_masks("[MASK]")})


def _without_task_masks(mask: str) -> dict[str, str]:
    """The blank names of a vocabulary whose GLMs were trained without task masks (THUDM's BERT and RoBERTa ones):
    THUDM's tokenizers have no `[sMASK]`/`[gMASK]` for them, so those strings stay text, and THUDM's pretraining
    uses the one mask token for every blank, sentence blanks and left-to-right generation included
    (`blocklm_utils.py`: the gap-sentence and generation masks are 'MASK' without `--task-mask`). The sMASK and
    gMASK roles (the collator's objectives, the causal prefix) therefore go to the mask token."""
    return {"mask_token": mask, "smask_token": mask, "gmask_token": mask}


def bert_tokenizer(vocab_file: str) -> GLMTokenizer:
    """GLM-Base / GLM-Large / GLM-410M / GLM-515M: BERT's uncased WordPiece plus sop/eop from id 30522; no task
    masks (`[gMASK]`/`[sMASK]` are text), as THUDM trained them."""
    _require(vocab_file)
    with open(vocab_file, encoding="utf-8") as handle:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(handle) if line.rstrip("\n")}
    backend = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    specials = [("[PAD]", 0), ("[UNK]", 100), ("[CLS]", 101), ("[SEP]", 102), ("[MASK]", 103)]
    specials += [("<|startofpiece|>", 30522), ("<|endofpiece|>", 30523)]
    _add_specials(backend, specials)
    _template(backend, "[CLS]", "[SEP]")
    names = {"pad_token": "[PAD]", "eos_token": "[SEP]", "unk_token": "[UNK]", "sep_token": "[SEP]"}
    return GLMTokenizer.from_backend(backend, {**names, **_without_task_masks("[MASK]")})


# cog-pretrain's command tokens from id 50000 (`ChineseSPTokenizer` with `--fix-command-token` and `--task-mask`);
# THUDM's tokenizer skips 50005, which holds the Hub's `[UNUSED2]` here.
COG_UNUSED = "[UNUSED2]"
COG_COMMANDS = (
    "<|endoftext|>", "[SEP]", "[CLS]", "[MASK]", "[UNK]", COG_UNUSED, "<|startofpiece|>", "<|endofpiece|>", "[sMASK]",
    "[gMASK]",
)  # fmt: skip


def cog_sentencepiece_tokenizer(model_file: str) -> GLMTokenizer:
    """GLM-Large-Chinese / GLM-10B-Chinese: the cog-pretrain SentencePiece model plus THUDM's command tokens from
    id 50000 (`[UNK]` 50004, `[sMASK]` 50008, `[gMASK]` 50009). All ten ids are entries of the BPE vocabulary; all
    but the unused 50005 are special tokens too, so they are matched in text and 50005 is reached by no text."""
    backend = _sentencepiece_backend(model_file, extra_vocab=COG_COMMANDS)
    specials = [(token, 50000 + i) for i, token in enumerate(COG_COMMANDS) if token != COG_UNUSED]
    _add_specials(backend, specials)
    _template(backend, "[CLS]", "<|endoftext|>")
    names = {"pad_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "[UNK]", "sep_token": "[SEP]"}
    return GLMTokenizer.from_backend(backend, names)


def _sentencepiece_backend(model_file: str, extra_vocab: tuple[str, ...] = ()) -> Tokenizer:
    """A `tokenizers` copy of a SentencePiece BPE model (pieces and merges read by transformers' extractor, plus
    `extra_vocab` as entries numbered on from the model's last piece; no merge produces them), with
    SentencePiece's nmt_nfkc normalisation and whitespace collapsing, and `▁` prefixed to every text chunk between
    special tokens, as SentencePiece does when THUDM encodes the chunks one by one. Of the model's own symbols only
    the user-defined ones (cog-pretrain's `<n>`) are matched in text, as SentencePiece matches them; its control
    pieces `<s>`/`</s>` typed in text are characters to SentencePiece, so they stay text here too."""
    _require(model_file)
    spm = sentencepiece_extractor(model_file).extract(BPE)
    vocab = spm["vocab"] | {token: len(spm["vocab"]) + i for i, token in enumerate(extra_vocab)}
    backend = Tokenizer(BPE(vocab, spm["merges"], unk_token="<unk>", fuse_unk=True, dropout=None))
    steps = [normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")]
    if spm["_spm_precompiled_charsmap"]:
        steps.insert(0, normalizers.Precompiled(spm["_spm_precompiled_charsmap"]))
    backend.normalizer = normalizers.Sequence(steps)
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.add_tokens([piece for piece in spm["additional_special_tokens"] if not piece.special])
    return backend


CHATGLM_SPECIALS = ("[MASK]", "[gMASK]", "[sMASK]", "<unused_0>", "<sop>", "<eop>", "<ENC>", "<dBLOCK>")


def chatglm_tokenizer(model_file: str, num_image_tokens: int = 0) -> GLMTokenizer:
    """ChatGLM-6B: its `ice_text.model` SentencePiece vocabulary shifted by `num_image_tokens` (20000 in the first
    release, 0 since v1.1; ids below it are `<image_i>` placeholders). Newlines, tabs and runs of spaces become
    ChatGLM's `<n>` / `<|tab|>` / `<|blank_n|>` pieces (undone on decode), and inputs are `text [gMASK] <sop>`.
    `[MASK]`/`[gMASK]`/`[sMASK]`/`<sop>`/`<eop>` and the whitespace pieces are pieces of the SentencePiece model."""
    _require(model_file)
    spm = sentencepiece_extractor(model_file).extract(None)
    if isinstance(spm["vocab"], dict):
        names = sorted(spm["vocab"], key=spm["vocab"].get)
    else:
        names = [piece for piece, _ in spm["vocab"]]
    missing = [token for token in (*CHATGLM_SPECIALS, *WHITESPACE_PIECES, "<pad>", "<unk>") if token not in names]
    if missing:
        raise ValueError(f"{model_file} is not a ChatGLM vocabulary: it has no pieces {missing[:5]}.")
    images = [f"<image_{i}>" for i in range(num_image_tokens)]
    if isinstance(spm["vocab"], dict):
        vocab = {name: i for i, name in enumerate(images + names)}
        model = BPE(vocab, spm["merges"], unk_token="<unk>", fuse_unk=True, dropout=None)
    else:
        lowest = min(score for _, score in spm["vocab"])
        pieces = [(name, lowest) for name in images] + spm["vocab"]
        model = Unigram(pieces, unk_id=num_image_tokens + names.index("<unk>"))
    backend = Tokenizer(model)
    if spm["_spm_precompiled_charsmap"]:
        backend.normalizer = normalizers.Precompiled(spm["_spm_precompiled_charsmap"])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    backend.add_tokens([AddedToken(piece, normalized=False) for piece in WHITESPACE_PIECES])
    specials = [(token, num_image_tokens + names.index(token)) for token in (*CHATGLM_SPECIALS, "<pad>", "<unk>")]
    _add_specials(backend, specials, lstrip_blanks=False)
    backend.post_processor = processors.TemplateProcessing(
        single="$A [gMASK] <sop>",
        special_tokens=[(token, backend.token_to_id(token)) for token in ("[gMASK]", "<sop>")],
    )
    tokens = {"pad_token": "<pad>", "unk_token": "<unk>", "cls_token": "<ENC>", "eos_token": "<eop>"}
    tokens |= {"sop_token": "<sop>", "eop_token": "<eop>"}
    return GLMTokenizer.from_backend(backend, tokens, whitespace_tokens=True)


def load_thudm_vocabulary(folder: str) -> GLMTokenizer:
    """Imports the vocabulary files found in a THUDM checkpoint folder (or a folder of them)."""
    files = set(os.listdir(folder))
    path = lambda name: os.path.join(folder, name)  # noqa: E731
    if "cog-pretrain.model" in files:
        return cog_sentencepiece_tokenizer(path("cog-pretrain.model"))
    if {"vocab.json", "merges.txt"} <= files:
        with open(path("vocab.json"), encoding="utf-8") as handle:
            is_roberta = "<mask>" in json.load(handle)
        importer = roberta_tokenizer if is_roberta else gpt2_tokenizer
        return importer(path("vocab.json"), path("merges.txt"))
    if "vocab.txt" in files:
        return bert_tokenizer(path("vocab.txt"))
    raise FileNotFoundError(
        f"No THUDM vocabulary in {folder}: expected cog-pretrain.model, vocab.json + merges.txt, or vocab.txt."
    )
