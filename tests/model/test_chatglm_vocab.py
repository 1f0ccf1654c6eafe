"""ChatGLM-6B tokenizer layout, checked against SentencePiece itself on small models trained here.

Expected ids follow ChatGLM's published rules, applied independently of glm_hf: newline -> `<n>`, tab ->
`<|tab|>`, runs of 80 down to 2 spaces -> `<|blank_n|>`, SentencePiece encoding, every id shifted by the image-token
offset, then `[gMASK] <sop>` appended.
"""

import io
import random

import pytest
from transformers import AutoTokenizer

from glm_hf import GLMTokenizer
from glm_hf.convert.vocab import chatglm_tokenizer

spm = pytest.importorskip("sentencepiece")

SPECIALS = ["[MASK]", "[gMASK]", "[sMASK]", "<unused_0>", "<sop>", "<eop>", "<ENC>", "<dBLOCK>"]
WHITESPACE = ["<n>", "<|tab|>"] + [f"<|blank_{n}|>" for n in range(2, 81)]
WORDS = "the capital of France is Paris and Japan Tokyo . , 北京 是 中国 的 首都 东京 日本 你好 世界 模型 。".split()
WORDS += "< > | _ n tab blank 0 1 4 8".split()  # the characters of the whitespace pieces' strings
TEXTS = [
    "你好",
    "the capital of France is [MASK] .",
    "北京是中国的首都\n\n东京  是\t日本的   首都",
    "  the capital",
    "\nthe capital",
    "[gMASK] the capital",
    "Paris" + " " * 100 + "Tokyo",
    "Tokyo  ",
]


# Texts with whitespace pieces' strings typed in them, and the pieces their real whitespace makes.
TYPED_PIECES = {
    "the capital<n>Paris": [],
    "Japan <|tab|> Tokyo": [],
    "<|blank_4|>Paris": [],
    "<n>": [],
    "Paris <n> is\nthe  capital": ["<n>", "<|blank_2|>"],
    "\t<|blank_80|><|blank_81|>\n<n>": ["<|tab|>", "<n>"],
}


def chatglm_rules(text: str) -> str:
    text = text.replace("\n", "<n>").replace("\t", "<|tab|>")
    for n in range(80, 1, -1):
        text = text.replace(" " * n, f"<|blank_{n}|>")
    return text


def pieces_as_whitespace(text: str) -> str:
    """`text` with every whitespace piece's string turned into its whitespace (`<|blank_81|>` is no piece)."""
    for n in range(80, 1, -1):
        text = text.replace(f"<|blank_{n}|>", " " * n)
    return text.replace("<n>", "\n").replace("<|tab|>", "\t")


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def ice_text(request, tmp_path_factory):
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(2000)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=model,
        model_type=request.param,
        vocab_size=200,
        hard_vocab_limit=False,
        user_defined_symbols=SPECIALS + WHITESPACE,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        character_coverage=1.0,
        minloglevel=2,
    )
    path = tmp_path_factory.mktemp(request.param) / "ice_text.model"
    path.write_bytes(model.getvalue())
    return path


@pytest.mark.parametrize("offset", [0, 20000])
def test_ids_follow_chatglm_rules(ice_text, offset):
    reference = spm.SentencePieceProcessor(model_file=str(ice_text))
    tokenizer = chatglm_tokenizer(str(ice_text), num_image_tokens=offset)
    gmask, sop = reference.piece_to_id("[gMASK]") + offset, reference.piece_to_id("<sop>") + offset
    for text in TEXTS:
        expected = [i + offset for i in reference.encode(chatglm_rules(text))] + [gmask, sop]
        assert tokenizer(text)["input_ids"] == expected, text
    ids = [reference.piece_to_id(p) + offset for p in ["[MASK]", "[sMASK]", "[gMASK]", "<sop>", "<eop>", "<pad>"]]
    assert tokenizer.mask_token_ids + [tokenizer.sop_token_id, tokenizer.eop_token_id, tokenizer.pad_token_id] == ids
    assert tokenizer.convert_ids_to_tokens(offset) == "<unk>"
    if offset:
        assert tokenizer.convert_ids_to_tokens([0, offset - 1]) == ["<image_0>", f"<image_{offset - 1}>"]


def test_decode_restores_whitespace_and_reload_keeps_the_layout(ice_text, tmp_path):
    tokenizer = chatglm_tokenizer(str(ice_text), num_image_tokens=20000)
    for text in TEXTS:
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, GLMTokenizer) and loaded.whitespace_tokens
    for text in TEXTS:
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_a_vocabulary_without_chatglm_pieces_is_refused(tmp_path):
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["plain text only"] * 50), model_writer=model, vocab_size=20, minloglevel=2,
        hard_vocab_limit=False,
    )  # fmt: skip
    path = tmp_path / "plain.model"
    path.write_bytes(model.getvalue())
    with pytest.raises(ValueError, match="not a ChatGLM vocabulary"):
        chatglm_tokenizer(str(path))


def test_piece_strings_typed_in_plain_text_stay_text_and_real_whitespace_keeps_its_pieces(ice_text, tmp_path):
    """With split_special_tokens a typed `<n>` is text and decodes as typed; real newlines, tabs and space runs keep
    ChatGLM's pieces and ids. By default (markup) a typed `<n>` is the newline piece, as in ChatGLM's tokenizer."""
    reference = spm.SentencePieceProcessor(model_file=str(ice_text))
    tokenizer = chatglm_tokenizer(str(ice_text))
    pieces = set(tokenizer.convert_tokens_to_ids(WHITESPACE))
    for _ in range(2):  # as built, then saved after plain-text use and loaded again
        for text, real in TYPED_PIECES.items():
            plain = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
            assert tokenizer.decode(plain) == text
            assert [i for i in plain if i in pieces] == tokenizer.convert_tokens_to_ids(real), text
            markup = tokenizer(text, add_special_tokens=False)["input_ids"]
            assert markup == reference.encode(chatglm_rules(text)), text
            assert tokenizer.decode(markup) == pieces_as_whitespace(text)
        for text in [text for text in TEXTS if "[" not in text]:
            expected = reference.encode(chatglm_rules(text)) + [reference.piece_to_id(p) for p in ("[gMASK]", "<sop>")]
            assert tokenizer(text, split_special_tokens=True)["input_ids"] == expected
        tokenizer.save_pretrained(tmp_path)
        tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    # what plain-text encoding adds to the backend (saved with it) is not added again after loading
    assert str(tokenizer.backend_tokenizer.pre_tokenizer).count("Split(") <= 1
