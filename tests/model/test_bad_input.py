"""Bad input to the model, to loading and to the command line gets a clear error (or, for masks written in another
convention, its real meaning), never a silent wrong result or a raw traceback."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from glm_hf import GLMForCausalLM, GLMForConditionalGeneration
from glm_hf.cli import main
from tests.helpers.tiny import random_words, tiny_model


@pytest.fixture(scope="module")
def model() -> GLMForConditionalGeneration:
    return tiny_model()


@pytest.fixture(scope="module")
def causal() -> GLMForCausalLM:
    torch.manual_seed(0)
    return GLMForCausalLM(tiny_model().config).eval()


def padded_batch(model) -> tuple[torch.Tensor, torch.Tensor]:
    ids = random_words(torch.Generator().manual_seed(0), 2, 6)
    ids[:, -1] = model.config.mask_token_id
    padding = torch.ones_like(ids)
    padding[1, :2] = 0
    return ids, padding


def additive(keep: torch.Tensor) -> torch.Tensor:
    """transformers' additive form of a keep mask: 0 where kept, the dtype's minimum where blocked."""
    return torch.zeros(keep.shape).masked_fill(~keep.bool(), torch.finfo(torch.float32).min)


@torch.no_grad()
def test_an_additive_2d_padding_mask_means_what_it_says(model, causal):
    ids, padding = padded_batch(model)
    for head in (model, causal):
        expected = head(input_ids=ids, attention_mask=padding).logits
        for mask in (additive(padding), additive(padding).masked_fill(padding == 0, float("-inf"))):
            got = head(input_ids=ids, attention_mask=mask).logits
            torch.testing.assert_close(got[padding.bool()], expected[padding.bool()])
    reference = model.generate(input_ids=ids, attention_mask=padding, max_new_tokens=4, do_sample=False)
    assert torch.equal(model.generate(input_ids=ids, attention_mask=additive(padding), max_new_tokens=4), reference)
    plain = ids[:, :-1]
    reference = causal.generate(input_ids=plain, attention_mask=padding[:, :-1], max_new_tokens=4, do_sample=False)
    assert torch.equal(
        causal.generate(input_ids=plain, attention_mask=additive(padding[:, :-1]), max_new_tokens=4), reference
    )


@torch.no_grad()
def test_an_additive_4d_mask_means_what_it_says(model):
    ids, _ = padded_batch(model)
    keep = torch.ones(2, 1, 6, 6, dtype=torch.bool).tril()
    keep[:, :, :, :3] = True
    expected = model(input_ids=ids, attention_mask=keep).logits
    torch.testing.assert_close(model(input_ids=ids, attention_mask=additive(keep)).logits, expected)
    torch.testing.assert_close(model(input_ids=ids, attention_mask=keep.long()).logits, expected)
    with pytest.raises(ValueError, match="additive.*positive values"):
        model(input_ids=ids, attention_mask=keep.float())


def test_masks_with_values_of_no_known_form_are_refused(model):
    ids, padding = padded_batch(model)
    with pytest.raises(ValueError, match="1 for tokens and 0 for padding"):
        model(input_ids=ids, attention_mask=padding * 2)
    with pytest.raises(ValueError, match="1 .may attend. and 0"):
        model(input_ids=ids, attention_mask=torch.ones(2, 1, 6, 6, dtype=torch.long) * 3)


@pytest.mark.parametrize("lengths", [[-1, 3], [3, 7]])
def test_part_a_lengths_outside_the_row_are_refused(model, lengths):
    ids, _ = padded_batch(model)
    with pytest.raises(ValueError, match=r"Part A length, in \[0, 6\]"):
        model(input_ids=ids, attention_mask=torch.tensor(lengths))


def test_negative_positions_are_refused(model):
    ids, _ = padded_batch(model)
    positions = torch.zeros(2, 2, 6, dtype=torch.long)
    positions[0, 0, 0] = -1
    with pytest.raises(ValueError, match="non-negative; got -1"):
        model(input_ids=ids, position_ids=positions)


@pytest.mark.parametrize("shape", [(0, 5), (2, 0), (5,)])
def test_empty_or_flat_inputs_are_refused(model, causal, shape):
    ids = torch.full(shape, 10)
    for call in (model, causal, model.generate, causal.generate):
        with pytest.raises(ValueError, match="non-empty batch"):
            call(input_ids=ids)


def test_generating_past_the_position_table_is_refused_before_any_step(model, causal):
    calls = []
    hooks = [head.register_forward_pre_hook(lambda *_: calls.append(1)) for head in (model, causal)]
    ids = random_words(torch.Generator().manual_seed(1), 1, 10)
    try:
        with pytest.raises(ValueError, match="ask for at most 63 new tokens"):
            model.generate(torch.cat([ids, torch.tensor([[model.config.mask_token_id]])], 1), max_new_tokens=64)
        with pytest.raises(ValueError, match="ask for at most 53 new tokens"):
            causal.generate(ids, max_new_tokens=60)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == []
    prompt = torch.cat([ids, torch.tensor([[model.config.mask_token_id]])], 1)
    assert model.generate(prompt, max_new_tokens=63, min_new_tokens=63).shape[1] == 11 + 1 + 63
    assert causal.generate(ids, max_new_tokens=53, min_new_tokens=53).shape[1] == 10 + 53


@pytest.fixture(scope="module")
def saved(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp("saved") / "model"
    model.save_pretrained(folder)
    return folder


def damaged_copy(saved, tmp_path, name: str, damage) -> str:
    folder = tmp_path / "damaged"
    shutil.copytree(saved, folder)
    damage(folder / name)
    return str(folder)


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        ("model.safetensors", lambda p: os.truncate(p, os.path.getsize(p) // 2), "model.safetensors is damaged"),
        ("model.safetensors", lambda p: p.write_bytes(b""), "model.safetensors is damaged"),
        ("config.json", lambda p: p.write_text('{"model_type": "glm-hf",'), "config.json is damaged"),
    ],
    ids=["truncated-weights", "empty-weights", "broken-config"],
)
def test_damaged_files_are_named_with_what_to_do(saved, tmp_path, name, damage, message):
    folder = damaged_copy(saved, tmp_path, name, damage)
    with pytest.raises(OSError, match=f"{message}.*download or save the model again"):
        GLMForConditionalGeneration.from_pretrained(folder)


def test_a_missing_folder_is_named_as_missing(tmp_path):
    with pytest.raises(OSError, match="does not exist; give the folder of a saved model or a Hub repo id"):
        GLMForConditionalGeneration.from_pretrained(tmp_path / "no-such-model")


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json"])
def test_the_tokenizer_names_a_missing_folder_and_its_damaged_files(tmp_path, name):
    """GLMTokenizer said "Repo id must be in the form ..." for a missing folder and raised a bare JSONDecodeError for
    a damaged file. (AutoTokenizer reads tokenizer_config.json itself, before any GLM code runs.)"""
    from glm_hf import GLMTokenizer
    from glm_hf.demo.run import load_demo_tokenizer

    with pytest.raises(OSError, match="no-such-tokenizer does not exist; give the folder of a saved tokenizer"):
        GLMTokenizer.from_pretrained(tmp_path / "no-such-tokenizer")
    load_demo_tokenizer().save_pretrained(tmp_path / "tokenizer")
    (tmp_path / "tokenizer" / name).write_text('{"model": ', encoding="utf-8")
    with pytest.raises(OSError, match=f"tokenizer/{name} is damaged \\(not valid JSON.*save the tokenizer again"):
        GLMTokenizer.from_pretrained(tmp_path / "tokenizer")


def command_error(arguments: list[str]) -> str:
    """The message `glm-hf ARGUMENTS` exits with; it must be one line."""
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    message = str(exit_info.value)
    assert exit_info.value.code not in (0, None) and "\n" not in message.strip()
    return message


def test_command_line_errors_are_one_clear_line(tmp_path, saved):
    binary = tmp_path / "corpus.bin"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    text = tmp_path / "corpus.txt"
    text.write_text("Paris is the capital of France.\n" * 50, encoding="utf-8")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n \n\n", encoding="utf-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    out = str(tmp_path / "out")
    train = ["tokenizer", "train"]
    assert "not UTF-8 text (undecodable byte at offset 0)" in command_error([*train, str(binary), "--output", out])
    assert "leaves no room for learned tokens" in command_error(
        [*train, str(text), "--vocab-size", "5", "--output", out]
    )
    assert "training texts are empty" in command_error([*train, str(blank), "--output", out])
    assert "is empty; give files with text" in command_error(["pretrain", "--train-file", str(empty), "--output", out])
    missing = str(tmp_path / "no-tokenizer")
    message = command_error(["pretrain", "--train-file", str(text), "--tokenizer", missing, "--output", out])
    assert "is not a saved tokenizer folder" in message
    assert "has no config.json" in command_error(["quantize", str(tmp_path / "nothing"), out])
    card_folder = tmp_path / "card"
    shutil.copytree(saved, card_folder)
    (card_folder / "card_info.json").write_text("{not json", encoding="utf-8")
    assert "card_info.json is damaged" in command_error(["card", str(card_folder)])
    (card_folder / "card_info.json").write_text(json.dumps({"colour": "red"}), encoding="utf-8")
    assert "card_info.json is damaged" in command_error(["card", str(card_folder)])
    assert not os.path.exists(out)


@pytest.mark.parametrize(
    "arguments",
    [
        ["demo", "--max-steps", "-5"],
        ["demo", "--max-steps", "0"],
        ["pretrain", "--train-file", "x.txt", "--output", "o", "--max-steps", "0"],
        ["tokenizer", "train", "x.txt", "--output", "o", "--vocab-size", "-5"],
        ["quantize", "a", "b", "--group-size", "many"],
    ],
)
def test_bad_numbers_are_refused_by_the_parser(arguments, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == 2
    assert "positive" in capsys.readouterr().err


def test_the_traceback_appears_only_with_debug(tmp_path):
    binary = tmp_path / "corpus.bin"
    binary.write_bytes(b"\xff\xfe\x00")
    command = [sys.executable, "-m", "glm_hf.cli", "tokenizer", "train", str(binary), "--output", str(tmp_path / "o")]
    plain = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert plain.returncode == 1
    assert plain.stderr.strip().splitlines() == [
        f"glm-hf tokenizer train: {binary} is not UTF-8 text (undecodable byte at offset 0); give plain text files."
    ]
    debug = subprocess.run(
        [*command, "--debug"], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr


def test_empty_batches_to_the_tokenizer_and_its_builders_are_refused():
    from glm_hf.demo.run import load_demo_tokenizer

    tokenizer = load_demo_tokenizer()
    with pytest.raises(ValueError, match="batch of texts to tokenize is empty"):
        tokenizer([], return_tensors="pt")
    for prompts in ({"input_ids": []}, {"input_ids": [[]]}, tokenizer(["Paris [MASK]", ""])):
        with pytest.raises(ValueError, match="prompts are empty"):
            tokenizer.build_inputs_for_generation(prompts)
    with pytest.raises(ValueError, match="prompts are empty"):
        tokenizer.build_inputs_for_multiple_choice({"input_ids": []}, [])


def test_a_started_span_before_the_blank_is_named_as_such(model):
    ids = random_words(torch.Generator().manual_seed(2), 1, 6)
    ids[0, 2] = model.config.sop_token_id
    ids[0, 4] = model.config.mask_token_id
    with pytest.raises(ValueError, match="holds <\\|startofpiece\\|> before its blank"):
        model.generate(ids, max_new_tokens=2)


@pytest.mark.parametrize("head", ["model", "causal"])
@pytest.mark.parametrize("training", [True, False])
def test_labels_that_are_all_ignored_give_a_zero_loss(head, training, request):
    """Cross-entropy over no tokens was NaN (as in GPT-2), which a Trainer logs and can carry into the weights; now
    the loss is 0, still attached to the graph, and its gradients are zero."""
    net = request.getfixturevalue(head)
    ids = random_words(torch.Generator().manual_seed(3), 2, 6)
    ids[:, -1] = net.config.mask_token_id
    net.train(training)
    try:
        loss = net(ids, labels=torch.full_like(ids, -100)).loss
        loss.backward()
    finally:
        net.eval()
    assert loss.item() == 0 and loss.requires_grad
    assert all(p.grad is None or not p.grad.any() for p in net.parameters())
    net.zero_grad(set_to_none=True)
