"""The files that travel: glm_hf/model/ is exactly what a checkpoint carries, it imports nothing else of glm_hf, and
folders saved before the package was restructured (at commit fd08248) still load, with and without glm_hf."""

import ast
import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import glm_hf
from glm_hf import GLMForCausalLM, GLMModel
from tests.helpers.clean_process import load_in_clean_process
from tests.helpers.paths import REPO
from tests.helpers.tiny import tiny_config

MODEL_DIR = Path(glm_hf.__file__).parent / "model"
TRAVELLING = sorted(path.name for path in MODEL_DIR.glob("*.py") if path.name != "__init__.py")
OLD_FOLDERS = REPO / "tests" / "fixtures" / "saved-fd08248"
# What the model code may import besides its siblings: the standard library and what transformers itself needs.
ALLOWED_THIRD_PARTY = {"torch", "transformers", "tokenizers", "safetensors", "huggingface_hub", "numpy"}


def imported_roots(path: Path) -> set[str]:
    """Top-level names of every absolute import in a module (function-level imports included); relative imports
    as '.name' (they must name a sibling)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level > 1:
                roots.add("." * node.level + (node.module or ""))
            elif node.level == 1:
                roots.add("." + (node.module or ""))
            else:
                roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("name", TRAVELLING)
def test_travelling_module_imports_only_siblings_and_allowed_packages(name):
    roots = imported_roots(MODEL_DIR / name)
    siblings = {"." + Path(other).stem for other in TRAVELLING}
    outside = {
        root
        for root in roots
        if root not in siblings and root not in ALLOWED_THIRD_PARTY and root not in sys.stdlib_module_names
    }
    assert not outside, f"{name} imports {sorted(outside)}: saved folders would need more than their own files"
    source = (MODEL_DIR / name).read_text(encoding="utf-8")
    assert "import_module(" not in source and "__import__(" not in source, f"{name} imports by string"


@pytest.mark.parametrize("head", [GLMModel, GLMForCausalLM])
def test_a_saved_folder_carries_exactly_the_model_folder(head, tmp_path):
    torch.manual_seed(0)
    head(tiny_config()).save_pretrained(tmp_path)
    assert sorted(path.name for path in tmp_path.glob("*.py")) == TRAVELLING
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    for target in auto_map.values():
        assert (tmp_path / (target.split(".")[0] + ".py")).is_file(), target


def test_the_package_import_graph_has_no_circle():
    """Imports go one way: cli/serving/training/demo/convert -> model, never back, and no module reaches itself."""
    package = MODEL_DIR.parent
    modules = {
        ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__"): path
        for path in package.rglob("*.py")
    }
    edges = {name: set() for name in modules}
    for name, path in modules.items():
        base = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                anchor = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
                target = f"{anchor}.{node.module}" if node.module else anchor
            else:
                target = node.module
            for candidate in [target, *(f"{target}.{alias.name}" for alias in node.names)]:
                if candidate in modules and candidate != name:
                    edges[name].add(candidate)
    model_modules = {name for name in modules if name.startswith("glm_hf.model.") or name == "glm_hf.model"}
    for name in model_modules:
        assert edges[name] <= model_modules, f"{name} imports {sorted(edges[name] - model_modules)}"

    def reach(start: str, seen: set[str]) -> None:
        for target in edges[start]:
            assert target != origin, f"import circle through {origin} and {start}"
            if target not in seen:
                seen.add(target)
                reach(target, seen)

    for origin in modules:
        if origin != "glm_hf":  # the package's __init__ imports everything, and nothing imports it
            reach(origin, set())


EXPECTED = json.loads((OLD_FOLDERS / "expected.json").read_text()) if OLD_FOLDERS.is_dir() else {}
KINDS = ("glm", "chatglm")


def _outputs(model, tokenizer, prompt: str) -> dict:
    inputs = tokenizer.build_inputs_for_generation(tokenizer(prompt, return_tensors="pt"), max_gen_length=8)
    with torch.no_grad():
        logits = model(**{k: v for k, v in inputs.items() if k != "generation_attention_mask"}).logits
    tokens = model.generate(**tokenizer(prompt, return_tensors="pt"), max_new_tokens=6, do_sample=False)
    return {"logits": logits, "generated": tokens[0].tolist()}


def _check(outputs: dict, expected: dict) -> None:
    assert outputs["generated"] == expected["generated"]
    torch.testing.assert_close(outputs["logits"][0, -1, :8], torch.tensor(expected["last_logits"]))
    assert abs(float(outputs["logits"].double().sum()) - expected["logits_sum"]) < 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_a_folder_saved_before_the_restructure_loads_with_glm_hf(kind):
    folder = OLD_FOLDERS / kind
    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    assert type(model) is glm_hf.GLMForConditionalGeneration  # glm_hf's classes, not the folder's copy
    _check(_outputs(model, AutoTokenizer.from_pretrained(folder), EXPECTED["prompt"]), EXPECTED[kind])


LOAD_REMOTE = """
import sys, torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
folder, out = sys.argv[1], sys.argv[2]
model = AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
assert "glm_hf" not in sys.modules
prompt = {prompt!r}
inputs = tokenizer.build_inputs_for_generation(tokenizer(prompt, return_tensors="pt"), max_gen_length=8)
with torch.no_grad():
    logits = model(**{{k: v for k, v in inputs.items() if k != "generation_attention_mask"}}).logits
tokens = model.generate(**tokenizer(prompt, return_tensors="pt"), max_new_tokens=6, do_sample=False)
torch.save({{"logits": logits, "generated": tokens[0].tolist()}}, out)
"""


@pytest.mark.parametrize("kind", KINDS)
def test_a_folder_saved_before_the_restructure_loads_as_remote_code(kind, tmp_path):
    outputs = load_in_clean_process(LOAD_REMOTE.format(prompt=EXPECTED["prompt"]), OLD_FOLDERS / kind, tmp_path)
    _check(outputs, EXPECTED[kind])


def test_a_folder_resaved_now_loads_as_remote_code(tmp_path):
    """The same weights saved by this version carry this version's code and still give the recorded outputs."""
    folder = tmp_path / "resaved"
    AutoModelForSeq2SeqLM.from_pretrained(OLD_FOLDERS / "chatglm").save_pretrained(folder)
    AutoTokenizer.from_pretrained(OLD_FOLDERS / "chatglm").save_pretrained(folder)
    assert (folder / "body_glm.py").is_file()
    outputs = load_in_clean_process(LOAD_REMOTE.format(prompt=EXPECTED["prompt"]), folder, tmp_path)
    _check(outputs, EXPECTED["chatglm"])
