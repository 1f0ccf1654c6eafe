"""A converted tiny ChatGLM-6B folder for the chat and serving tests: a SentencePiece vocabulary with ChatGLM's
special and whitespace pieces trained here on English and Chinese chat words, random ChatGLM-6B weights in
THUDM's layout, then `convert_checkpoint`, exactly as a user converts a real checkpoint."""

import io
import json
from pathlib import Path

from safetensors.torch import save_file

from glm_hf.convert.checkpoint import convert_checkpoint
from tests.helpers.thudm_checkpoint import CHATGLM_CONFIG, chatglm_state

CHAT_WORDS = (
    "hello how are you I am fine thanks what is the capital of France Paris Japan Tokyo good morning "
    "你好 世界 北京 是 中国 的 首都 东京 日本 谢谢 问 答 Round 0 1 2 3 4 5 6 7 8 9 ? , . !"
).split()
SPECIALS = ["[MASK]", "[gMASK]", "[sMASK]", "<unused_0>", "<sop>", "<eop>", "<ENC>", "<dBLOCK>"]
WHITESPACE = ["<n>", "<|tab|>"] + [f"<|blank_{n}|>" for n in range(2, 81)]


def write_converted_chatglm(folder: Path, seed: int = 0) -> tuple[Path, dict, dict]:
    """Writes THUDM-format files under `folder / "thudm"`; returns the converted folder `folder / "chatglm"`, the
    THUDM state dict and THUDM config (for `thudm_reference.chatglm_forward`)."""
    import sentencepiece as spm

    model_file = io.BytesIO()
    sentences = [" ".join(CHAT_WORDS[i:] + CHAT_WORDS[:i]) for i in range(len(CHAT_WORDS))] * 10
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model_file,
        model_type="unigram",
        vocab_size=180,
        hard_vocab_limit=False,
        user_defined_symbols=SPECIALS + WHITESPACE,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        character_coverage=1.0,
        minloglevel=2,
    )
    config = CHATGLM_CONFIG | {"mask_token_id": 4, "gmask_token_id": 5, "bos_token_id": 8, "eos_token_id": 9}
    config |= {"max_sequence_length": 160}
    source = folder / "thudm"
    source.mkdir(parents=True)
    (source / "config.json").write_text(json.dumps(config))
    (source / "ice_text.model").write_bytes(model_file.getvalue())
    (source / "tokenizer_config.json").write_text(json.dumps({"num_image_tokens": 0}))
    state = chatglm_state(config, seed)
    save_file(state, str(source / "model.safetensors"))
    return convert_checkpoint(source, folder / "chatglm"), state, config
