"""pipeline("text-generation") loads a GLM through AutoModelForCausalLM (the causal head) and continues plain prompts."""

import torch
from conftest import tiny_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, pipeline

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


def test_text_generation_pipeline_loads_the_causal_head_and_continues_plain_prompts(tmp_path):
    tiny_model(initializer_range=0.3, tie_word_embeddings=False).save_pretrained(tmp_path)
    tokenizer = word_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    generator = pipeline("text-generation", model=str(tmp_path))
    assert type(generator.model).__name__ == "GLMForCausalLM"
    model = generator.model

    prompts = ["w10 w11 w12", "w13"]
    outputs = generator(prompts, max_new_tokens=5, do_sample=False, return_full_text=False, batch_size=2)
    for text, output in zip(prompts, outputs, strict=True):
        ids = tokenizer(text, return_tensors="pt").input_ids
        expected = model.generate(ids, max_new_tokens=5, do_sample=False)
        assert ids.shape[1] < expected.shape[1] <= ids.shape[1] + 5 and torch.equal(expected[:, : ids.shape[1]], ids)
        assert output[0]["generated_text"] == tokenizer.decode(expected[0, ids.shape[1] :], skip_special_tokens=True)
