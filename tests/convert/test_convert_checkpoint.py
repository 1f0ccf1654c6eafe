"""THUDM GLM and ChatGLM-6B checkpoint import: parity with THUDM's math (tests/helpers/thudm_reference.py), greedy
generation, sharded and prefixed inputs, `from_pretrained` on THUDM folders, the CLI, and bad input."""

import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from glm_hf import GLMForConditionalGeneration, GLMTokenizer
from glm_hf.cli import main
from glm_hf.convert.checkpoint import CheckpointError, convert_checkpoint
from glm_hf.model.blank_infilling import build_position_ids
from tests.helpers.paths import THUDM_VOCAB as VOCAB
from tests.helpers.thudm_checkpoint import CHATGLM_CONFIG, GLM_CONFIG, chatglm_state, glm_state
from tests.helpers.thudm_reference import chatglm_forward, glm_forward, greedy


def write_glm_folder(folder: Path, state: dict, sharded: bool = False, prefix: str = "") -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(GLM_CONFIG))
    shutil.copy(VOCAB / "gpt2-vocab.json", folder / "vocab.json")
    shutil.copy(VOCAB / "gpt2-merges.txt", folder / "merges.txt")
    state = {prefix + key: value for key, value in state.items()}
    if not sharded:
        torch.save(state, folder / "pytorch_model.bin")
        return folder
    keys = sorted(state)
    halves = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, part in halves.items():
        save_file({key: state[key].contiguous() for key in part}, str(folder / name))
    weight_map = {key: name for name, part in halves.items() for key in part}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def write_chatglm_folder(folder: Path, state: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(CHATGLM_CONFIG))
    torch.save(state, folder / "pytorch_model.bin")
    return folder


needs_vocab = pytest.mark.skipif(not VOCAB.is_dir(), reason="THUDM vocabulary fixtures (../shared) not present")


@pytest.fixture(scope="module")
def glm_source(tmp_path_factory) -> tuple[Path, dict]:
    if not VOCAB.is_dir():
        pytest.skip("THUDM vocabulary fixtures (../shared) not present")
    state = glm_state(GLM_CONFIG)
    return write_glm_folder(tmp_path_factory.mktemp("thudm") / "glm-tiny", state), state


@pytest.fixture(scope="module")
def glm_converted(glm_source, tmp_path_factory) -> Path:
    return convert_checkpoint(glm_source[0], tmp_path_factory.mktemp("out") / "glm-hf-tiny")


def glm_layout(tokenizer: GLMTokenizer, prompt: str, span: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """THUDM's layout for one filled blank: ids, position ids (blank position, block 1..n) and the Part A length."""
    part_a = tokenizer(prompt)["input_ids"]
    piece = [tokenizer.sop_token_id, *tokenizer(span, add_special_tokens=False)["input_ids"]]
    ids = torch.tensor([part_a + piece])
    blank = part_a.index(tokenizer.mask_token_id)
    n, m = len(part_a), len(piece)
    positions = torch.tensor([[*range(n), *[blank] * m], [0] * n + [*range(1, m + 1)]])
    return ids, positions.unsqueeze(0), torch.tensor([n])


def test_glm_logits_match_thudm_math(glm_source, glm_converted):
    _, state = glm_source
    model = GLMForConditionalGeneration.from_pretrained(glm_converted, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(glm_converted)
    ids, positions, sep = glm_layout(tokenizer, "Tsinghua University is located in [MASK].", " Beijing, China")
    expected = glm_forward(state, GLM_CONFIG, ids, positions, sep)
    for implementation in ("eager", "sdpa"):
        model.set_attn_implementation(implementation)
        with torch.no_grad():
            ours = model(input_ids=ids, position_ids=positions, attention_mask=sep).logits
        assert (ours - expected).abs().max() <= 1e-5, implementation
    assert expected.abs().max() > 1.0  # the comparison is not between near-zero logits


def test_glm_positions_we_derive_are_thudms(glm_converted):
    tokenizer = AutoTokenizer.from_pretrained(glm_converted)
    ids, positions, _ = glm_layout(tokenizer, "Tsinghua University is located in [MASK].", " Beijing")
    config = GLMForConditionalGeneration.config_class.from_pretrained(glm_converted)
    assert torch.equal(build_position_ids(ids, config.blank_token_ids, config.sop_token_id), positions)


def test_glm_greedy_generation_matches_thudm(glm_source, glm_converted):
    _, state = glm_source
    model = GLMForConditionalGeneration.from_pretrained(glm_converted).eval()
    tokenizer = AutoTokenizer.from_pretrained(glm_converted)
    prompt = tokenizer("Tsinghua University is located in [MASK].", return_tensors="pt")["input_ids"]
    blank = prompt[0].tolist().index(tokenizer.mask_token_id)
    n = prompt.shape[1]

    def reference(ids):
        b = ids.shape[1] - n
        positions = torch.tensor([[*range(n), *[blank] * b], [0] * n + [*range(1, b + 1)]]).unsqueeze(0)
        return glm_forward(state, GLM_CONFIG, ids, positions, torch.tensor([n]))

    with torch.no_grad():  # an eos that never comes: both decode all 10 steps
        expected = greedy(reference, torch.cat([prompt, torch.tensor([[tokenizer.sop_token_id]])], -1), 10)
        ours = model.generate(prompt, max_new_tokens=10, do_sample=False, eos_token_id=model.config.vocab_size)
    assert ours.tolist() == expected.tolist()


def test_multiple_choice_layout_and_scores_match_thudm(glm_source, glm_converted):
    _, state = glm_source
    model = GLMForConditionalGeneration.from_pretrained(glm_converted, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(glm_converted)
    context = tokenizer("The capital of France is [MASK].")
    choices = ["Paris", "Tokyo and Kyoto", " Berlin"]
    ours = tokenizer.build_inputs_for_multiple_choice(context, [choices])

    ids = context["input_ids"]  # THUDM's _build_input_for_multiple_choice, from its published code
    division, blank = len(ids), ids.index(tokenizer.mask_token_id)
    tokens, positions, blocks, masks, targets = (
        list(ids),
        [*range(division)],
        [0] * division,
        [torch.ones(division, division)],
        [],
    )
    for choice in choices:
        choice_ids = tokenizer(choice, add_special_tokens=False)["input_ids"]
        targets.append((range(len(tokens), len(tokens) + len(choice_ids)), choice_ids))
        tokens += [tokenizer.sop_token_id, *choice_ids[:-1]]
        positions += [blank] * len(choice_ids)
        blocks += [*range(1, len(choice_ids) + 1)]
        masks.append(torch.ones(len(choice_ids), len(choice_ids)).tril())
    mask = torch.block_diag(*masks)
    mask[division:, :division] = 1
    thudm_positions = torch.tensor([positions, blocks]).unsqueeze(0)

    assert ours["input_ids"][0].tolist() == tokens
    assert torch.equal(ours["position_ids"], thudm_positions)
    assert torch.equal(ours["attention_mask"][0, 0], mask.bool())

    reference = glm_forward(state, GLM_CONFIG, torch.tensor([tokens]), thudm_positions, mask=mask[None, None])
    expected = torch.stack([reference[0].log_softmax(-1)[list(rows), ids_].sum() for rows, ids_ in targets])
    with torch.no_grad():
        logits = model(**{k: ours[k] for k in ("input_ids", "position_ids", "attention_mask")}).logits
    log_probs = logits[0].log_softmax(-1)
    labelled = ours["choice_labels"][0] != -100
    token_scores = log_probs[labelled].gather(-1, ours["choice_labels"][0][labelled, None])[:, 0]
    scores = torch.zeros(len(choices)).index_add(0, ours["choice_index"][0][labelled], token_scores)
    assert (scores - expected).abs().max() <= 1e-5


def test_sharded_safetensors_with_the_glm_prefix_convert_the_same(glm_source, glm_converted, tmp_path):
    _, state = glm_source
    source = write_glm_folder(tmp_path / "sharded", state, sharded=True, prefix="glm.")
    converted = convert_checkpoint(source, tmp_path / "out", dtype=torch.float32)
    assert sorted(p.name for p in converted.glob("*.safetensors")) == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    first = GLMForConditionalGeneration.from_pretrained(glm_converted).state_dict()
    second = GLMForConditionalGeneration.from_pretrained(converted).state_dict()
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_legacy_pickle_checkpoints_convert_the_same(glm_source, glm_converted, tmp_path):
    source, state = glm_source
    legacy = tmp_path / "legacy"
    shutil.copytree(source, legacy)
    torch.save(state, legacy / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    first = GLMForConditionalGeneration.from_pretrained(glm_converted).state_dict()
    second = GLMForConditionalGeneration.from_pretrained(convert_checkpoint(legacy, tmp_path / "out")).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_from_pretrained_and_auto_load_a_thudm_folder_directly(glm_source, glm_converted):
    source, _ = glm_source
    direct = GLMForConditionalGeneration.from_pretrained(source).state_dict()
    converted = AutoModelForSeq2SeqLM.from_pretrained(glm_converted).state_dict()
    assert all(torch.equal(direct[k], converted[k]) for k in converted)
    card = (glm_converted / "README.md").read_text()
    assert "glm-tiny" in card and "no remote code" in card


def chatglm_prompts(config: dict) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    text = torch.randint(10, 240, (2, 9), generator=g)
    gmask = torch.cat([text, torch.tensor([[config["gmask_token_id"], config["bos_token_id"]]] * 2)], -1)
    return gmask


def test_chatglm_logits_and_greedy_generation_match_thudm_math(tmp_path):
    state = chatglm_state(CHATGLM_CONFIG)
    source = write_chatglm_folder(tmp_path / "chatglm-tiny", state)
    converted = convert_checkpoint(source, tmp_path / "out", require_tokenizer=False)
    model = GLMForConditionalGeneration.from_pretrained(converted, attn_implementation="eager").eval()
    assert model.config.post_ln_alpha == pytest.approx(56**0.5) and not model.config.tie_word_embeddings

    prompts = chatglm_prompts(CHATGLM_CONFIG)
    span = torch.randint(10, 240, (2, 5), generator=torch.Generator().manual_seed(2))
    filled = torch.cat([prompts, span], -1)
    expected = chatglm_forward(state, CHATGLM_CONFIG, filled)
    for implementation in ("eager", "sdpa"):
        model.set_attn_implementation(implementation)
        with torch.no_grad():
            ours = model(input_ids=filled).logits
        assert (ours - expected).abs().max() <= 1e-5, implementation
    assert expected.abs().max() > 1.0

    masked = prompts.clone()
    masked[:, 4] = CHATGLM_CONFIG["mask_token_id"]
    masked[:, -2] = 17  # "text [MASK] text <sop>": ChatGLM fills the [MASK]
    with torch.no_grad():
        assert (model(input_ids=masked).logits - chatglm_forward(state, CHATGLM_CONFIG, masked)).abs().max() <= 1e-5

    with torch.no_grad():
        reference = greedy(lambda ids: chatglm_forward(state, CHATGLM_CONFIG, ids), prompts, 8)
        ours = model.generate(prompts, max_new_tokens=8, do_sample=False, eos_token_id=model.config.vocab_size)
    assert ours.tolist() == reference.tolist()


def test_chatglm_folder_with_its_vocabulary_converts_end_to_end(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    model_file = io.BytesIO()
    words = "the capital of France is Paris and Japan Tokyo 北京 是 中国 的 首都".split()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([" ".join(words[i:] + words[:i]) for i in range(len(words))] * 20),
        model_writer=model_file,
        model_type="unigram",
        vocab_size=150,
        hard_vocab_limit=False,
        user_defined_symbols=["[MASK]", "[gMASK]", "[sMASK]", "<unused_0>", "<sop>", "<eop>", "<ENC>", "<dBLOCK>"]
        + ["<n>", "<|tab|>"]
        + [f"<|blank_{n}|>" for n in range(2, 81)],
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        minloglevel=2,
    )
    config = CHATGLM_CONFIG | {"mask_token_id": 4, "gmask_token_id": 5, "bos_token_id": 8, "eos_token_id": 9}
    state = chatglm_state(config)
    source = tmp_path / "chatglm"
    source.mkdir()
    (source / "config.json").write_text(json.dumps(config))
    (source / "ice_text.model").write_bytes(model_file.getvalue())
    (source / "tokenizer_config.json").write_text(json.dumps({"num_image_tokens": 0}))
    save_file(state, str(source / "model.safetensors"))

    converted = convert_checkpoint(source, tmp_path / "out")
    tokenizer = AutoTokenizer.from_pretrained(converted)
    model = AutoModelForSeq2SeqLM.from_pretrained(converted).eval()
    prompt = tokenizer("北京 是 中国 的", return_tensors="pt")["input_ids"]
    assert prompt[0, -2:].tolist() == [5, 8]  # text [gMASK] <sop>, as ChatGLM's tokenizer builds it
    with torch.no_grad():
        expected = greedy(lambda ids: chatglm_forward(state, config, ids), prompt, 6)
        ours = model.generate(prompt, max_new_tokens=6, do_sample=False, eos_token_id=model.config.vocab_size)
    assert ours.tolist() == expected.tolist()

    _edit_config(source, mask_token_id=7)
    with pytest.raises(CheckpointError, match="disagree on special token ids"):
        convert_checkpoint(source, tmp_path / "again")


def test_convert_command_writes_a_loadable_folder(glm_source, tmp_path, capsys):
    source, _ = glm_source
    main(["convert", str(source), str(tmp_path / "out"), "--dtype", "float16"])
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "out")
    assert model.dtype == torch.float16
    assert isinstance(AutoTokenizer.from_pretrained(tmp_path / "out"), GLMTokenizer)
    assert "converted" in capsys.readouterr().out


@needs_vocab
def test_bert_vocabulary_without_task_masks_converts_with_mask_for_every_blank(tmp_path):
    """Issue 18: THUDM's BERT GLMs (glm-large; `config_tasks/model_blocklm_large.sh` has no --task-mask) have no
    [sMASK]/[gMASK]: those strings are text, and THUDM's pretraining uses [MASK] for sentence blanks and left-to-right
    generation (`blocklm_utils.py`). The config's smask/gmask ids are [MASK]'s, not [UNK]'s (what looking the
    missing strings up gave), and the embedding keeps THUDM's padded 30592 rows."""
    from glm_hf import GLMConfig, GLMForCausalLM

    config = GLM_CONFIG | {"vocab_size": 30592}
    source = tmp_path / "glm-bert"
    source.mkdir()
    (source / "config.json").write_text(json.dumps(config))
    shutil.copy(VOCAB / "bert-large-uncased-vocab.txt", source / "vocab.txt")
    torch.save(glm_state(config), source / "pytorch_model.bin")
    converted = convert_checkpoint(source, tmp_path / "out")
    ours = GLMConfig.from_pretrained(converted)
    ids = (ours.mask_token_id, ours.smask_token_id, ours.gmask_token_id, ours.sop_token_id, ours.eop_token_id)
    assert ids == (103, 103, 103, 30522, 30523) and ours.vocab_size == 30592
    tokenizer = AutoTokenizer.from_pretrained(converted)
    assert tokenizer("[gMASK]", add_special_tokens=False)["input_ids"] == [1031, 20917, 6711, 1033]  # [ gma ##sk ]
    prompt = tokenizer("the capital of france is", add_special_tokens=False, return_tensors="pt")["input_ids"]
    causal = GLMForCausalLM.from_pretrained(converted)  # its left-to-right prefix is [MASK] <|startofpiece|>
    assert causal.generate(prompt, max_new_tokens=2, do_sample=False).shape == (1, prompt.shape[1] + 2)


@needs_vocab
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "config.json").write_text(json.dumps({"model_type": "bert"})), "model_type='bert'"),
        (lambda f: _edit_state(f, lambda s: s.pop("transformer.final_layernorm.bias")), "lacks 1 weights"),
        (lambda f: _edit_state(f, lambda s: s.update(extra=torch.zeros(1))), "unexpected key 'extra'"),
        (
            lambda f: _edit_state(f, lambda s: s.update({"transformer.final_layernorm.bias": torch.zeros(5)})),
            "'transformer.final_layernorm.bias' has shape",
        ),
        (lambda f: _truncate(f / "pytorch_model.bin"), "truncated"),
        (lambda f: torch.save({"w": _Arbitrary()}, f / "pytorch_model.bin"), "refuses to run"),
        (lambda f: (f / "vocab.json").unlink(), "no vocabulary file"),
        (lambda f: _edit_config(f, vocab_size=1000), "do not belong together"),
        (lambda f: (f / "pytorch_model.bin").unlink(), "no weights found"),
    ],
)
def test_bad_sources_fail_clearly_and_leave_no_destination(tmp_path, damage, message):
    source = write_glm_folder(tmp_path / "src", glm_state(GLM_CONFIG))
    damage(source)
    with pytest.raises(CheckpointError, match=message):
        convert_checkpoint(source, tmp_path / "out" / "dst")
    assert not (tmp_path / "out" / "dst").exists()
    assert not list((tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else True


def test_existing_destination_is_kept_unless_overwrite(glm_source, tmp_path):
    source, _ = glm_source
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not empty"):
        convert_checkpoint(source, tmp_path / "dst")
    assert (tmp_path / "dst" / "keep.txt").read_text() == "mine"
    convert_checkpoint(source, tmp_path / "dst", overwrite=True)
    assert not (tmp_path / "dst" / "keep.txt").exists() and (tmp_path / "dst" / "config.json").is_file()


def test_unsupported_chatglm_variants_are_refused(tmp_path):
    source = write_chatglm_folder(tmp_path / "ptuned", chatglm_state(CHATGLM_CONFIG))
    _edit_config(source, pre_seq_len=128)
    with pytest.raises(CheckpointError, match="P-tuning"):
        convert_checkpoint(source, tmp_path / "out", require_tokenizer=False)
    with pytest.raises(CheckpointError, match="--no-tokenizer"):
        convert_checkpoint(source, tmp_path / "out")


class _Arbitrary:
    """An object whose unpickling would need this test module's code."""


def _edit_state(folder: Path, edit) -> None:
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    edit(state)
    torch.save(state, folder / "pytorch_model.bin")


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | changes))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
