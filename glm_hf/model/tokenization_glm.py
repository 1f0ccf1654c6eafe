"""GLMTokenizer: a fast (`tokenizers`-backed) tokenizer with GLM's blank and span tokens and its input builders."""

import itertools
import json
import os
import re
import threading
from collections.abc import Iterable, Iterator

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer
from transformers import BatchEncoding, TokenizersBackend
from transformers.tokenization_utils_base import PaddingStrategy, TruncationStrategy

from .blank_infilling import (
    batch_multiple_choice,
    build_position_ids,
    check_targets,
    generation_layout,
    infilling_example,
    left_pad,
    multiple_choice_layout,
)

# The GLM special tokens in the order of their default ids (GLMConfig's defaults follow this order).
DEFAULT_SPECIAL_TOKENS = {
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "cls_token": "[CLS]",
    "eos_token": "<|endoftext|>",
    "mask_token": "[MASK]",
    "smask_token": "[sMASK]",
    "gmask_token": "[gMASK]",
    "sop_token": "<|startofpiece|>",
    "eop_token": "<|endofpiece|>",
}
# Blanks absorb the whitespace on their left (THUDM's `lstrip`): in "is [MASK]." the blank stands for " Paris", the
# way the span is tokenized in training, so prompts carry no stray space token before the blank.
BLANK_TOKENS = ("mask_token", "smask_token", "gmask_token")
# Named special tokens that transformers has no slot for; they become `tokenizer.<name>` / `<name>_id`.
GLM_EXTRA_TOKENS = ("smask_token", "gmask_token", "sop_token", "eop_token")
# ChatGLM's whitespace pieces: newline, tab and runs of 2-80 spaces each become one token.
WHITESPACE_PIECES = ("<n>", "<|tab|>", *(f"<|blank_{n}|>" for n in range(2, 81)))
# A Unicode noncharacter (reserved for a program's internal use, so in no vocabulary). Plain-text encoding writes it
# for the `<` of a whitespace piece's string typed in the text (`<n>`, ...), which the piece matcher then passes by;
# the backend's normalizer turns it back into `<` (see `GLMTokenizer._keep_special_strings_as_text`).
PIECE_MARK = "\ufdd0"
# What follows the `<` of a whitespace piece's string, and every start of it.
_PIECE_TAILS = "|".join(re.escape(piece[1:]) for piece in WHITESPACE_PIECES)
_PIECE_TAIL_STARTS = frozenset(piece[1:end] for piece in WHITESPACE_PIECES for end in range(1, len(piece) + 1))
_TYPED_PIECE_START = re.compile(f"<(?={_PIECE_TAILS})")
_PIECE_TAIL = re.compile(_PIECE_TAILS)
# CJK ideographs and full-width punctuation: `train_bpe` pre-splits them one per piece (BERT's Chinese handling).
CJK_CHARACTER = r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]"
# transformers hands `split_special_tokens` to the backend as a flag on the shared `tokenizers.Tokenizer`, set per
# call, so two threads encoding at once (the server's event loop and its engine) would read each other's flag: a
# plain-text call could parse `[MASK]`. Encoding holds this lock (reentrant: chat encoding calls back into
# `_encode_plus`).
_ENCODE_LOCK = threading.RLock()


def _typed_pieces_as_text(value):
    """`value` (a string, or messages: lists and dicts of them) with `PIECE_MARK` for the `<` of every whitespace
    piece's string typed in it, which encoding then reads as text (see `GLMTokenizer._keep_special_strings_as_text`).
    Dict keys are left as they are."""
    if isinstance(value, str):
        return _TYPED_PIECE_START.sub(PIECE_MARK, value)
    if isinstance(value, dict):
        return {key: _typed_pieces_as_text(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_typed_pieces_as_text(item) for item in value]
    return value


def encode_whitespace(text: str) -> str:
    """ChatGLM's text preprocessing: `\n` -> `<n>`, `\t` -> `<|tab|>`, a run of n spaces (2 <= n <= 80) ->
    `<|blank_n|>` (longer runs are cut into runs of 80)."""
    text = text.replace("\n", "<n>").replace("\t", "<|tab|>")
    return re.sub(" {2,80}", lambda run: f"<|blank_{len(run.group())}|>", text)


def _text_ids(backend: Tokenizer, text: str) -> list[int]:
    """The ids the backend's normalizer, pre-tokenizer and model give `text`, added tokens ignored."""
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    pieces = [text] if backend.pre_tokenizer is None else [p for p, _ in backend.pre_tokenizer.pre_tokenize_str(text)]
    return [token.id for piece in pieces for token in backend.model.tokenize(piece)]


def decode_whitespace(text: str) -> str:
    """Undoes `encode_whitespace`: every piece string in `text` (`<|blank_81|>` is none) becomes its whitespace."""
    text = re.sub(r"<\|blank_([2-9]|[1-7][0-9]|80)\|>", lambda piece: " " * int(piece.group(1)), text)
    return text.replace("<n>", "\n").replace("<|tab|>", "\t")


def _check_text_types(texts, name: str) -> None:
    """Refuses a batch item that is not a string (or a pair of strings), naming it: the backend's own TypeError
    names neither the item nor the fix."""
    if not isinstance(texts, list | tuple):
        return
    for i, item in enumerate(texts):
        if isinstance(item, str):
            continue
        if isinstance(item, list | tuple) and len(item) == 2 and all(isinstance(part, str) for part in item):
            continue  # a (text, text_pair) pair
        raise TypeError(
            f"{name}[{i}] is {type(item).__name__} ({item!r:.40}), not a string: pass a string or a list of strings "
            f"(convert the item with str(), or leave it out)."
        )


# The largest id the backend can look up (a u32); larger ones overflow.
_MAX_TOKEN_ID = 2**32 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_unicode(texts, name: str) -> None:
    """Raises ValueError naming the first lone surrogate in `texts` (a str, or lists of them): such a string is not
    valid Unicode, so it has no UTF-8 form for the backend. It is refused rather than replaced, as text silently
    changed would be; it usually comes from bytes decoded with errors="surrogateescape" or a JSON "\\ud800" escape."""
    items = [(name, texts)]
    while items:
        where, text = items.pop(0)
        if isinstance(text, list | tuple):
            items[:0] = [(f"{where}[{i}]", item) for i, item in enumerate(text)]
        elif isinstance(text, str) and (found := _SURROGATE.search(text)):
            raise ValueError(
                f"{where} holds a lone surrogate (U+{ord(found.group()):04X}) at character {found.start()}, which is "
                "not valid Unicode text: fix how the text was decoded, or replace the character (e.g. with U+FFFD)."
            )


def _looks_like_a_path(name: str) -> bool:
    """Whether `name` can only be a local path (a Hub repo id is `name` or `namespace/name`)."""
    return os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name


def _damaged_json_files(folder: str) -> list[str]:
    """The JSON files in `folder` that do not parse (a tokenizer's files are all JSON, its chat template aside)."""
    damaged = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith(".json"):
            try:
                with open(os.path.join(folder, name), encoding="utf-8") as handle:
                    json.load(handle)
            except (UnicodeDecodeError, json.JSONDecodeError):
                damaged.append(os.path.join(folder, name))
    return damaged


class _TextCounter:
    """Iterates over texts, counting the non-blank ones (training consumes a stream, so count as it goes)."""

    def __init__(self, texts: Iterable[str]):
        self.texts, self.count = texts, 0

    def __iter__(self) -> Iterator[str]:
        for text in self.texts:
            self.count += bool(text and text.strip())
            yield text


class GLMTokenizer(TokenizersBackend):
    """Tokenizer for GLM models.

    Any `tokenizers` backend (byte-level BPE, GPT-2/RoBERTa BPE, WordPiece, SentencePiece Unigram) plus GLM's special
    tokens: `[MASK]`, `[sMASK]`, `[gMASK]` (blanks), `<|startofpiece|>` / `<|endofpiece|>` (span start / end), and cls,
    eos, pad, unk. Special-token strings in text (`[MASK]`, `<|endoftext|>`, ...) become those tokens; with
    `split_special_tokens=True` they are read as text (plain text: use it for untrusted text), in every vocabulary.
    `apply_chat_template` reads message contents as plain text by default.
    Pads on the left by default, like HF decoder-only tokenizers, so batches are ready for `generate()`.

    Build one with `GLMTokenizer.from_backend(tokenizer, special_tokens)`, train one with `GLMTokenizer.train_bpe`,
    or import THUDM's vocabularies with `glm_hf.convert.vocab`.
    """

    padding_side = "left"
    model_input_names = ["input_ids", "attention_mask"]

    def _keep_special_strings_as_text(self) -> None:
        """Makes plain-text encoding (`split_special_tokens=True`, sanitized chats) read special-token strings, and
        ChatGLM's whitespace-piece strings (`<n>`, `<|tab|>`, `<|blank_n|>`), as text in every vocabulary. The
        added-token matcher skips special tokens then (typed piece strings reach it with `PIECE_MARK` for their `<`,
        which the normalizer turns back), but a SentencePiece model that holds them as pieces (ChatGLM-6B's `[MASK]`,
        `<sop>`, `<n>`, ...) would produce them again from the text; a pre-tokenizer split after such a string's
        first character stops that. Ordinary encoding never reaches the split (the matcher takes special tokens and
        pieces out first). Done on the first plain-text call: a class `__init__` would change how transformers loads
        the tokenizer."""
        if getattr(self, "_special_strings_kept_as_text", False):
            return
        self._special_strings_kept_as_text = True
        backend = self._tokenizer
        current = backend.normalizer
        if self.whitespace_tokens and (current is None or current.normalize_str(PIECE_MARK + "n>") != "<n>"):
            unmark = normalizers.Replace(Regex(f"{PIECE_MARK}(?={_PIECE_TAILS})"), "<")
            backend.normalizer = unmark if current is None else normalizers.Sequence([unmark, current])
        leaking = [
            token.content
            for token in self.added_tokens_decoder.values()
            if (token.special or self.whitespace_tokens and token.content in WHITESPACE_PIECES)
            and len(token.content) > 1
            and token.content != self.unk_token  # unknown characters give it anyway; no split stops that
            and backend.token_to_id(token.content) in _text_ids(backend, token.content)
        ]
        if not leaking:
            return
        pattern = "|".join(f"{re.escape(token[0])}(?={re.escape(token[1:])})" for token in leaking)
        split = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
        current = backend.pre_tokenizer
        backend.pre_tokenizer = split if current is None else pre_tokenizers.Sequence([split, current])

    def _piece_typing_ids(self) -> frozenset[int]:
        """The ids of tokens that can spell part of a whitespace piece's string as text: a `<` followed, in the token,
        by the start of a piece's tail or a whole one (`<`, `▁<`, `<n`, `<|bl`; not `<sop>` or `<image_0>`). When
        a sequence has none, every piece string in its decoded text is a piece. Computed once per vocabulary."""
        size = len(self)
        cached = getattr(self, "_piece_typing", None)
        if cached is not None and cached[0] == size:
            return cached[1]
        ids = frozenset(
            i
            for token, i in self.get_vocab().items()
            if "<" in token
            and token not in WHITESPACE_PIECES
            and any(
                rest in _PIECE_TAIL_STARTS or _PIECE_TAIL.match(rest)
                for rest in (token[at + 1 :] for at, char in enumerate(token) if char == "<")
            )
        )
        self._piece_typing = (size, ids)
        return ids

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs) -> "GLMTokenizer":
        """`PreTrainedTokenizerBase.from_pretrained`, naming what is wrong with a local folder: one that does not
        exist (not transformers' "Repo id must be in the form ..."), or its damaged JSON files (not a bare
        JSONDecodeError)."""
        path = os.path.expanduser(str(pretrained_model_name_or_path))
        if _looks_like_a_path(path) and not os.path.exists(path):
            raise OSError(
                f"{path} does not exist; give the folder of a saved tokenizer or a Hub repo id (namespace/name)."
            )
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            damaged = ", ".join(_damaged_json_files(path)) or f"a JSON file of {path}"
            raise OSError(
                f"{damaged} is damaged (not valid JSON: {error}); download or save the tokenizer again."
            ) from error

    @classmethod
    def from_backend(
        cls, backend: Tokenizer, special_tokens: dict[str, str] | None = None, **kwargs
    ) -> "GLMTokenizer":
        """Wraps a `tokenizers.Tokenizer` whose vocabulary already holds the GLM special tokens.

        `special_tokens` maps names (`pad_token`, `unk_token`, `cls_token`, `eos_token`, `mask_token`, `smask_token`,
        `gmask_token`, `sop_token`, `eop_token`) to token strings; missing names take GLM's default strings.
        """
        tokens = {**DEFAULT_SPECIAL_TOKENS, **(special_tokens or {})}
        missing = [token for token in tokens.values() if backend.token_to_id(token) is None]
        if missing:
            raise ValueError(
                f"The vocabulary has no id for the special tokens {missing}; add them to the backend tokenizer first "
                f"(tokenizers.Tokenizer.add_special_tokens) so that their ids are fixed."
            )
        extra = {name: tokens.pop(name) for name in GLM_EXTRA_TOKENS}
        return cls(tokenizer_object=backend, extra_special_tokens=extra, **tokens, **kwargs)

    @classmethod
    def train_bpe(
        cls, texts: Iterable[str], vocab_size: int = 32000, min_frequency: int = 2, show_progress: bool = False
    ) -> "GLMTokenizer":
        """Trains a byte-level BPE on `texts` (any language; every byte is covered, so nothing is ever unknown)
        with the GLM special tokens at ids 0-8 in `DEFAULT_SPECIAL_TOKENS` order. Blanks strip the whitespace on
        their left, as THUDM's tokenizers do. Chinese characters are pre-split one per piece, so a token never
        spans a word boundary in text without spaces (else "首都是巴黎" could become one token, and a blank could not
        stand for "巴黎" alone). Raises ValueError when `vocab_size` leaves no room for a learned token or the
        texts hold no text."""
        base_size = len(DEFAULT_SPECIAL_TOKENS) + len(pre_tokenizers.ByteLevel.alphabet())
        if vocab_size <= base_size:
            raise ValueError(
                f"vocab_size={vocab_size} leaves no room for learned tokens: the special tokens and the 256 bytes "
                f"already take {base_size}; use a larger size (thousands for real text)."
            )
        texts = _TextCounter(texts)
        backend = Tokenizer(BPE())
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(CJK_CHARACTER), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
        backend.decoder = decoders.ByteLevel()
        trainer = BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=[
                AddedToken(token, special=True, normalized=False, lstrip=name in BLANK_TOKENS)
                for name, token in DEFAULT_SPECIAL_TOKENS.items()
            ],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=show_progress,
        )
        backend.train_from_iterator(texts, trainer=trainer)
        if texts.count == 0:
            raise ValueError("the training texts are empty (no non-blank text); give a corpus to train on.")
        backend.post_processor = processors.ByteLevel(trim_offsets=False)
        return cls.from_backend(backend)

    def train_new_from_iterator(
        self, text_iterator: Iterator[str], vocab_size: int, length: int | None = None, **kwargs
    ) -> "GLMTokenizer":
        """A new byte-level BPE trained on `text_iterator`, with GLM's special tokens at ids 0-8 (`length`, the
        iterator's size for progress bars in the base class, is accepted for compatibility)."""
        if kwargs:
            raise ValueError(f"GLMTokenizer.train_new_from_iterator takes no extra options, got {sorted(kwargs)}.")
        trained = type(self).train_bpe(text_iterator, vocab_size=vocab_size)
        trained.padding_side = self.padding_side
        return trained

    @property
    def mask_token_ids(self) -> list[int]:
        """Ids of the three blank tokens: `[MASK]`, `[sMASK]`, `[gMASK]`."""
        return [self.mask_token_id, self.smask_token_id, self.gmask_token_id]

    @property
    def whitespace_tokens(self) -> bool:
        """Whether newlines, tabs and runs of spaces become ChatGLM's whitespace pieces before encoding. The pieces'
        strings typed in text (`<n>`, `<|tab|>`, `<|blank_n|>`) are those pieces by default, as in ChatGLM-6B's own
        tokenizer (they decode as whitespace); with `split_special_tokens=True`, and in sanitized chats, they are
        text and decode as typed."""
        return bool(self.init_kwargs.get("whitespace_tokens", False))

    def _whitespace_pieces(self, text, plain_text: bool):
        """ChatGLM preprocessing of str / list[str] inputs. A text that then starts with a piece gets a leading
        space, which becomes the lone `▁` SentencePiece's dummy prefix produces there. With `plain_text` the piece
        strings typed in the text (`<n>`, ...) get `PIECE_MARK` for their `<`, so that they stay text."""
        if isinstance(text, (list, tuple)):
            return [self._whitespace_pieces(item, plain_text) for item in text]
        if not isinstance(text, str):
            return text
        text = encode_whitespace(_typed_pieces_as_text(text) if plain_text else text)
        starts_with_piece = text.startswith(WHITESPACE_PIECES) or text.startswith(tuple(self.all_special_tokens))
        return " " + text if starts_with_piece else text

    def apply_chat_template(self, conversation, *args, **kwargs):
        """`PreTrainedTokenizerBase.apply_chat_template`, with message contents read as plain text by default
        (`sanitize_control_tokens=True` when tokenizing: a `[gMASK]` typed into a message is text, only the template's
        own special tokens are tokens; pass `sanitize_control_tokens=False` to parse them). transformers cannot
        sanitize with `tokenize=False` (the text is returned; tokenize it with `split_special_tokens=True` where it
        is untrusted) or `return_assistant_tokens_mask=True` (training masks; contents are then parsed).

        Refuses assistant masks that would be misplaced: with ChatGLM's whitespace pieces the backend's character
        offsets refer to the `<n>` / `<|blank_n|>` form of the text, not to the rendered conversation (whose rounds
        hold newlines). When sanitizing, ChatGLM's whitespace-piece strings typed into messages (`<n>`, ...) are text
        too (transformers' sanitizing covers special tokens only); real newlines keep their piece."""
        tokenize = kwargs.get("tokenize", True)
        kwargs.setdefault("sanitize_control_tokens", tokenize and not kwargs.get("return_assistant_tokens_mask"))
        if self.whitespace_tokens and kwargs.get("return_assistant_tokens_mask"):
            raise NotImplementedError(
                "return_assistant_tokens_mask is not supported for ChatGLM tokenizers (their whitespace pieces shift "
                "the offsets the masks are built from). The answer is what follows the prompt: mask the ids of "
                "apply_chat_template(conversation[:-1], add_generation_prompt=True)."
            )
        if self.whitespace_tokens and kwargs["sanitize_control_tokens"]:
            conversation = _typed_pieces_as_text(conversation)
            kwargs |= {name: _typed_pieces_as_text(kwargs[name]) for name in ("tools", "documents") if name in kwargs}
        return super().apply_chat_template(conversation, *args, **kwargs)

    def _decode(self, token_ids, skip_special_tokens: bool = False, **kwargs) -> str:
        ids = [token_ids] if isinstance(token_ids, int) else token_ids
        ids = ids["input_ids"] if isinstance(ids, dict) else ids
        self._check_ids(ids, skip_special_tokens)
        decode = super()._decode
        if not self.whitespace_tokens:
            return decode(ids, skip_special_tokens=skip_special_tokens, **kwargs)
        if self._piece_typing_ids().isdisjoint(ids):
            return decode_whitespace(decode(ids, skip_special_tokens=skip_special_tokens, **kwargs))
        # Text tokens may spell a piece's string here (typed as plain text): only piece tokens become whitespace.
        # Each run of text tokens is decoded after its piece, so that it decodes as within the whole sequence (a
        # SentencePiece decoder treats a sequence's first token apart), and the piece's string is then replaced.
        pieces = {self._tokenizer.token_to_id(piece) for piece in WHITESPACE_PIECES}
        bounds = [*(at for at, token in enumerate(ids) if token in pieces), len(ids)]
        text = [decode(ids[: bounds[0]], skip_special_tokens=skip_special_tokens, **kwargs)]
        for start, end in itertools.pairwise(bounds):
            piece = self._tokenizer.id_to_token(ids[start])
            run = decode(ids[start:end], skip_special_tokens=skip_special_tokens, **kwargs)
            text.append(decode_whitespace(piece) + run.removeprefix(piece))
        return "".join(text)

    def _check_ids(self, ids: list[int], skip_special_tokens: bool) -> None:
        """Refuses ids outside the vocabulary (0..len(self)-1), which the backend would drop without a word, or fail
        on with an OverflowError when negative. With `skip_special_tokens=True` (text only, as generation output is
        decoded) ids past the vocabulary are dropped as before: a model whose embedding has more rows than the
        tokenizer has tokens (ChatGLM-6B: 130528 for 130344) can generate one, and it is no text. Costs one min/max
        over the ids; the bad ones are listed only on failure."""
        if not ids:
            return
        size = len(self)
        end = _MAX_TOKEN_ID + 1 if skip_special_tokens else size
        if 0 <= min(ids) and max(ids) < end:
            return
        outside = sorted({i for i in ids if not 0 <= i < end})
        listed = ", ".join(map(str, outside[:10])) + (f" and {len(outside) - 10} more" if len(outside) > 10 else "")
        hint = " (-100 marks ignored label positions: replace it with pad_token_id first)" if -100 in outside else ""
        raise ValueError(
            f"Cannot decode ids {listed}: this tokenizer's ids are 0..{size - 1}{hint}. Decode ids made by this "
            "tokenizer or its model (ids a model generates past the tokenizer, from extra embedding rows, are "
            "dropped with skip_special_tokens=True)."
        )

    def _encode_plus(self, text, text_pair=None, **kwargs) -> BatchEncoding:
        if not kwargs.get("is_split_into_words"):
            _check_text_types(text, "text")
            _check_text_types(text_pair, "text_pair")
        with _ENCODE_LOCK:
            try:
                return self._encode_locked(text, text_pair, **kwargs)
            except TypeError as error:  # the backend's words for a string that is not valid Unicode
                _check_unicode(text, "text")
                _check_unicode(text_pair, "text_pair")
                raise error

    def _encode_locked(self, text, text_pair=None, **kwargs) -> BatchEncoding:
        plain_text = kwargs.get("split_special_tokens")
        plain_text = self.split_special_tokens if plain_text is None else plain_text
        if plain_text or kwargs.get("sanitize_control_tokens"):
            self._keep_special_strings_as_text()
        if isinstance(text, list | tuple) and not text:
            raise ValueError("The batch of texts to tokenize is empty; give at least one text.")
        if self.whitespace_tokens and not kwargs.get("is_split_into_words"):
            text = self._whitespace_pieces(text, plain_text)
            text_pair = self._whitespace_pieces(text_pair, plain_text)
        truncation = kwargs.get("truncation_strategy", TruncationStrategy.DO_NOT_TRUNCATE)
        if truncation == TruncationStrategy.DO_NOT_TRUNCATE or kwargs.get("return_overflowing_tokens"):
            return super()._encode_plus(text, text_pair, **kwargs)
        untruncated = dict(
            kwargs,
            truncation_strategy=TruncationStrategy.DO_NOT_TRUNCATE,
            padding_strategy=PaddingStrategy.DO_NOT_PAD,
            return_tensors=None,
        )
        before = super()._encode_plus(text, text_pair, **untruncated)["input_ids"]
        encoded = super()._encode_plus(text, text_pair, **kwargs)
        after = encoded["input_ids"]
        self._check_blanks_kept(before, after)
        return encoded

    def _check_blanks_kept(self, before, after) -> None:
        """Raises if truncation dropped a blank token from any row."""
        blanks = set(self.mask_token_ids)
        after = after.tolist() if isinstance(after, torch.Tensor) else after
        rows_before = [before] if before and isinstance(before[0], int) else before
        rows_after = [after] if after and isinstance(after[0], int) else after
        for row, (full, cut) in enumerate(zip(rows_before, rows_after, strict=True)):
            total, kept = sum(t in blanks for t in full), sum(t in blanks for t in cut)
            if kept < total:
                raise ValueError(
                    f"Truncation would remove {total - kept} of the {total} blanks in text {row}; shorten the text "
                    f"around the blank, raise max_length, or set truncation_side='left'/'right' to cut the other end."
                )

    def build_inputs_for_generation(
        self,
        model_input: BatchEncoding | dict,
        max_gen_length: int = 512,
        targets: list[str] | None = None,
        padding: bool = False,
        plain_text: bool = False,
    ) -> BatchEncoding:
        """Turns tokenized prompts (each with a blank) into GLM inputs.

        Without `targets`: inputs for `model.generate()`, i.e. each prompt plus `<|startofpiece|>`, left-padded, with
        `attention_mask` and `position_ids` `[batch, 2, seq]`. With `targets` (one string per prompt): a training
        batch where each target fills its prompt's first blank, with `labels` (-100 outside the span) aligned GLM's
        way; Part A is left-padded and spans right-padded so all spans start in one column. `max_gen_length` bounds
        a target's length including `<|endofpiece|>` (longer targets raise an error); with `padding=True` every
        span is padded to it, so all batches have the same width. Generation length is `generate(max_new_tokens=...)`.
        A target holding a blank or span marker is refused; with `plain_text=True` targets are read as plain text
        (`split_special_tokens=True`), so such strings are text to learn.
        """
        prompts = self._rows(model_input["input_ids"], model_input.get("attention_mask"))
        if targets is None:
            return self._generation_batch(prompts)
        if len(targets) != len(prompts):
            raise ValueError(f"Got {len(targets)} targets for {len(prompts)} prompts; pass one target per prompt.")
        spans = self(list(targets), add_special_tokens=False, split_special_tokens=plain_text)["input_ids"]
        layout_tokens = ("mask_token", "smask_token", "gmask_token", "sop_token", "eop_token")
        check_targets(spans, {getattr(self, name): getattr(self, f"{name}_id") for name in layout_tokens})
        rows = []
        for prompt, span in zip(prompts, spans, strict=True):
            if len(span) + 1 > max_gen_length:
                raise ValueError(
                    f"A target has {len(span)} tokens plus <|endofpiece|>, more than max_gen_length={max_gen_length}; "
                    f"raise max_gen_length or shorten the target."
                )
            example = infilling_example(prompt, [span], self.mask_token_ids, self.sop_token_id, self.eop_token_id)
            rows.append(example)
        span_width = max_gen_length if padding else None
        return self._training_batch(rows, span_width)

    def build_inputs_for_multiple_choice(self, model_input: BatchEncoding | dict, choices: list[list[str]]) -> dict:
        """One sequence per example holding all its choices as separate Part B spans, each seeing Part A and its
        own prefix only (one forward pass scores every choice), as THUDM's builder does. Returns `input_ids`,
        `position_ids`, a 4D boolean `attention_mask`, `choice_labels` (each choice's tokens, -100 elsewhere) and
        `choice_index` (which choice each labelled position scores, -1 elsewhere). Rows are right-padded."""
        prompts = self._rows(model_input["input_ids"], model_input.get("attention_mask"))
        if len(choices) != len(prompts):
            raise ValueError(f"Got choices for {len(choices)} examples but {len(prompts)} prompts.")
        layouts = []
        for prompt, options in zip(prompts, choices, strict=True):
            if not options:
                raise ValueError("Every example needs at least one choice.")
            tokenized = self(list(options), add_special_tokens=False)["input_ids"]
            layouts.append(multiple_choice_layout(prompt, tokenized, self.mask_token_ids, self.sop_token_id))
        return batch_multiple_choice(layouts, self.pad_token_id)

    def _rows(self, input_ids, attention_mask) -> list[list[int]]:
        """Unpadded token lists from tokenizer output (lists or tensors, padded or not)."""
        ids = input_ids.tolist() if isinstance(input_ids, torch.Tensor) else list(input_ids)
        if ids and isinstance(ids[0], int):
            ids = [ids]
        if attention_mask is None:
            rows = [list(row) for row in ids]
        else:
            mask = attention_mask.tolist() if isinstance(attention_mask, torch.Tensor) else list(attention_mask)
            if mask and isinstance(mask[0], int):
                mask = [mask]
            rows = [
                [t for t, keep in zip(row, keep_row, strict=True) if keep]
                for row, keep_row in zip(ids, mask, strict=True)
            ]
        if not rows or not all(rows):
            raise ValueError(
                "The prompts are empty (no rows, or a row without tokens); give each example its tokenized text."
            )
        return rows

    def _generation_batch(self, prompts: list[list[int]]) -> BatchEncoding:
        input_ids, padding = left_pad(prompts, self.pad_token_id)
        layout = generation_layout(input_ids, self.mask_token_ids, self.sop_token_id, padding)
        return BatchEncoding(
            {
                "input_ids": layout.input_ids,
                "attention_mask": layout.attention_mask,
                "position_ids": layout.position_ids,
            }
        )

    def _training_batch(self, rows: list[dict], span_width: int | None) -> BatchEncoding:
        """Left-pads Part A and right-pads Part B, so every row's span starts in the same column."""
        part_a = max(row["sep"] for row in rows)
        part_b = span_width or max(len(row["input_ids"]) - row["sep"] for row in rows)
        width = part_a + part_b
        input_ids = torch.full((len(rows), width), self.pad_token_id)
        labels = torch.full((len(rows), width), -100)
        padding = torch.zeros(len(rows), width, dtype=torch.long)
        for i, row in enumerate(rows):
            start, n = part_a - row["sep"], len(row["input_ids"])
            input_ids[i, start : start + n] = torch.tensor(row["input_ids"])
            labels[i, start : start + n] = torch.tensor(row["labels"])
            padding[i, start : start + n] = 1
        position_ids = build_position_ids(input_ids, self.mask_token_ids, self.sop_token_id, padding)
        return BatchEncoding(
            {"input_ids": input_ids, "attention_mask": padding, "position_ids": position_ids, "labels": labels}
        )


GLMTokenizer.register_for_auto_class()

__all__ = ["GLMTokenizer", "DEFAULT_SPECIAL_TOKENS"]
