"""LoRA through peft on GLM's projections, with gradient checkpointing and bf16 autocast; adapters save and reload."""

import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from glm_hf import GLMForCausalLM, GLMForConditionalGeneration
from glm_hf.model.blank_infilling import batch_infilling, infilling_example
from tests.helpers.tiny import tiny_config

peft = pytest.importorskip("peft")

LORA_TARGETS = ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]


def rows(n: int) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        part_a = torch.randint(9, 60, (8,), generator=generator).tolist()
        part_a[3] = 4
        out.append(infilling_example(part_a, [[11, 12, 13]], [4, 5, 6], 7, 8))
    return out


def lora_model(base: GLMForConditionalGeneration):
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, lora_dropout=0.0)
    return peft.get_peft_model(base, config)


def test_lora_trains_only_adapters_with_gradient_checkpointing_and_reloads(tmp_path):
    torch.manual_seed(0)
    base = GLMForConditionalGeneration(tiny_config())
    original = {name: p.detach().clone() for name, p in base.named_parameters()}
    model = lora_model(base)
    adapted = {name for name, p in model.named_parameters() if p.requires_grad}
    assert adapted and all("lora_" in name for name in adapted)
    assert {name.split(".")[-4] for name in adapted} == set(LORA_TARGETS)  # ...<target>.lora_A.default.weight

    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=20,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        activation_checkpointing=True,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=5,
        remove_unused_columns=False,
    )
    data = Dataset.from_list(rows(16))
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=lambda b: batch_infilling(b, 0))
    trainer.train()
    assert model.get_base_model().is_activation_checkpointing
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses[-1] < losses[0]
    base_now = model.get_base_model()
    for name, param in base_now.named_parameters():
        if "lora_" not in name:
            key = name.replace(".base_layer", "")
            assert torch.equal(param, original[key]), name

    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    model.eval()
    batch = batch_infilling(rows(2), 0)
    inputs = {k: batch[k] for k in ("input_ids", "position_ids", "attention_mask")}
    with torch.no_grad():
        expected = model(**inputs).logits
    torch.manual_seed(0)
    fresh = GLMForConditionalGeneration(tiny_config())
    reloaded = peft.PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, expected)
        merged = reloaded.merge_and_unload()
        torch.testing.assert_close(merged(**inputs).logits, expected, atol=1e-5, rtol=1e-5)


def test_bf16_autocast_forward_and_backward_run():
    torch.manual_seed(0)
    model = lora_model(GLMForConditionalGeneration(tiny_config()))
    model.train()
    batch = batch_infilling(rows(2), 0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)


def test_prompt_tuning_trains_virtual_tokens_of_the_causal_head():
    """PEFT's prompt tuning feeds `inputs_embeds` with a 2D mask, in forward and in generate()."""
    from peft import PromptTuningConfig

    torch.manual_seed(0)
    base = GLMForCausalLM(tiny_config(initializer_range=0.3))
    model = peft.get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    ids = torch.randint(9, 60, (2, 6))
    mask = torch.ones_like(ids)
    out = model(input_ids=ids, attention_mask=mask, labels=ids)
    assert out.logits.shape == (2, 4 + 6, 60)
    out.loss.backward()
    trained = {name for name, parameter in model.named_parameters() if parameter.grad is not None}
    assert trained == {"prompt_encoder.default.embedding.weight"}
    generated = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=3, do_sample=False, eos_token_id=None
    )
    assert generated.shape == (2, 9) and torch.equal(generated[:, :6], ids)
