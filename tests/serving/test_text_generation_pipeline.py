"""pipeline("text-generation") loads a GLM through AutoModelForCausalLM (the causal head) and continues text."""

import torch
from transformers import pipeline

from tests.helpers.tiny import tiny_model, word_tokenizer


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
