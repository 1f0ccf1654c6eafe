"""Tiny GLMs and a word-level tokenizer whose ids agree with them, for fast deterministic tests."""

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from glm_hf import GLMConfig, GLMForConditionalGeneration

MASK, SMASK, GMASK, SOP, EOP, PAD = 4, 5, 6, 7, 8, 0


def tiny_config(**overrides) -> GLMConfig:
    """A GLM small enough for fast tests; dropout off so runs are deterministic."""
    values = dict(
        vocab_size=60,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    values.update(overrides)
    return GLMConfig(**values)


def tiny_model(seed: int = 0, attn: str = "sdpa", **overrides) -> GLMForConditionalGeneration:
    torch.manual_seed(seed)
    model = GLMForConditionalGeneration(tiny_config(**overrides)).eval()
    model.set_attn_implementation(attn)
    return model


def random_words(generator: torch.Generator, *shape: int) -> torch.Tensor:
    """Random ordinary token ids (never a special token)."""
    return torch.randint(9, 60, shape, generator=generator)


SPECIALS = ["<pad>", "<unk>", "[CLS]", "<eos>", "[MASK]", "[sMASK]", "[gMASK]", "<|startofpiece|>", "<|endofpiece|>"]


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer whose special ids match GLMConfig's defaults (the GLM tokenizer is a
    separate issue; this one only has to agree on ids)."""
    vocab = {token: i for i, token in enumerate(SPECIALS)} | {f"w{i}": i for i in range(9, 60)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<eos>",
        mask_token="[MASK]",
        additional_special_tokens=SPECIALS[5:],
    )
    tokenizer.padding_side = "left"
    return tokenizer
