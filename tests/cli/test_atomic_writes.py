"""Commands that write folders: a real SIGKILL at any moment leaves the old destination or the complete new one, the
next run clears what the killed one left, no destination may be, contain or lie inside its source, and what is
written respects the umask. The kills come from tests/helpers/kill_at.py at chosen audit events of the real command."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from glm_hf import GLMTokenizer
from glm_hf.cli import main
from glm_hf.folder_writes import remove_stale_leftovers, staged_folder
from tests.helpers.chatglm_folder import write_converted_chatglm
from tests.helpers.paths import REPO
from tests.helpers.tiny import tiny_model

FIRST_STAGED_WRITE = ("open", ".staging", "1")
AT_THE_SWAP = ("ctypes.dlsym", "renameat2", "1")  # looked up just before the exchange
AFTER_THE_SWAP = ("shutil.rmtree", ".staging", "1")
TOKENIZER_CORPUS = "Paris is the capital of France.\n北京是中国的首都。\n" * 100


def run(arguments: list[str], kill: tuple[str, str, str], *options: str) -> subprocess.CompletedProcess:
    """Runs `glm-hf ARGUMENTS` in a subprocess that SIGKILLs itself at `kill` (event, needle, count)."""
    command = [sys.executable, "-m", "tests.helpers.kill_at", *kill, *options, "--", *arguments]
    # `tests.helpers.kill_at` is imported from the repository root, put first on the subprocess's path.
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)


def killed(result: subprocess.CompletedProcess) -> bool:
    return result.returncode == -signal.SIGKILL


def leftovers(destination: Path) -> list[str]:
    return sorted(p.name for p in destination.parent.iterdir() if p.name.startswith(f".{destination.name}.glm-hf-"))


def old_destination(folder: Path) -> Path:
    """A destination holding an earlier result, recognisable by its file `old.txt`."""
    folder.mkdir()
    (folder / "old.txt").write_text("the earlier result", encoding="utf-8")
    return folder


def holds_the_old_result(folder: Path) -> bool:
    return sorted(os.listdir(folder)) == ["old.txt"] and (folder / "old.txt").read_text() == "the earlier result"


@pytest.fixture(scope="module")
def thudm_chatglm(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("chatglm")
    write_converted_chatglm(folder)
    return folder / "thudm"


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("saved") / "model"
    tiny_model().save_pretrained(folder)
    return folder


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TOKENIZER_CORPUS, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("kill", "survivor"),
    [(FIRST_STAGED_WRITE, "old"), (AT_THE_SWAP, "old"), (AFTER_THE_SWAP, "new")],
    ids=["mid-write", "at-swap", "after-swap"],
)
def test_killed_convert_leaves_the_old_or_the_new_folder_and_the_rerun_cleans_up(
    thudm_chatglm, tmp_path, kill, survivor
):
    destination = old_destination(tmp_path / "converted")
    arguments = ["convert", str(thudm_chatglm), str(destination), "--overwrite"]
    assert killed(run(arguments, kill))
    if survivor == "old":
        assert holds_the_old_result(destination)
    else:
        assert AutoModelForSeq2SeqLM.from_pretrained(destination) is not None
    assert leftovers(destination)  # the killed run's staging folder (or the replaced folder) is still there

    assert run(arguments, ("none", "", "1")).returncode == 0
    assert leftovers(destination) == []
    assert AutoModelForSeq2SeqLM.from_pretrained(destination) is not None
    assert AutoTokenizer.from_pretrained(destination)("你好")["input_ids"]
    assert oct(destination.stat().st_mode & 0o777) == oct(0o777 & ~_umask())


@pytest.mark.parametrize(
    ("kill", "survivor"), [(FIRST_STAGED_WRITE, "old"), (AFTER_THE_SWAP, "new")], ids=["mid-write", "after-swap"]
)
def test_killed_tokenizer_train_leaves_the_old_or_the_new_folder(corpus, tmp_path, kill, survivor):
    destination = old_destination(tmp_path / "tokenizer")
    arguments = ["tokenizer", "train", str(corpus), "--vocab-size", "300", "--output", str(destination), "--overwrite"]
    assert killed(run(arguments, kill))
    if survivor == "old":
        assert holds_the_old_result(destination)
    else:
        assert len(GLMTokenizer.from_pretrained(destination)) == 300
    assert run(arguments, ("none", "", "1")).returncode == 0
    assert leftovers(destination) == [] and len(GLMTokenizer.from_pretrained(destination)) == 300


def test_killed_quantize_leaves_the_old_folder(saved_model, tmp_path):
    destination = old_destination(tmp_path / "int8")
    arguments = ["quantize", str(saved_model), str(destination), "--overwrite"]
    assert killed(run(arguments, FIRST_STAGED_WRITE))
    assert holds_the_old_result(destination)
    assert run(arguments, ("none", "", "1")).returncode == 0
    assert leftovers(destination) == []
    assert AutoModelForSeq2SeqLM.from_pretrained(destination).config.quantization_config.bits == 8


def test_killed_pretrain_leaves_the_old_folder(corpus, tmp_path):
    destination = old_destination(tmp_path / "pretrained")
    arguments = ["pretrain", "--train-file", str(corpus), "--output", str(destination), "--overwrite"]
    arguments += ["--vocab-size", "300", "--hidden-size", "32", "--num-layers", "1", "--num-heads", "2"]
    arguments += ["--row-length", "32", "--max-steps", "2", "--batch-size", "4"]
    assert killed(run(arguments, FIRST_STAGED_WRITE))
    assert holds_the_old_result(destination)
    assert run(arguments, ("none", "", "1")).returncode == 0
    assert leftovers(destination) == [] and (destination / "README.md").is_file()
    assert AutoModelForSeq2SeqLM.from_pretrained(destination) is not None


def test_killed_demo_leaves_the_old_folder(tmp_path):
    destination = old_destination(tmp_path / "demo")
    arguments = ["demo", "--output", str(destination), "--overwrite", "--max-steps", "2", "--show", "1"]
    arguments += ["--hidden-size", "32", "--num-layers", "1", "--num-heads", "2", "--batch-size", "8"]
    assert killed(run(arguments, FIRST_STAGED_WRITE))
    assert holds_the_old_result(destination)
    assert leftovers(destination)


def test_killed_card_leaves_the_old_card_and_the_rerun_removes_its_temporary_file(saved_model, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    for path in saved_model.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert killed(run(["card", str(folder), "--title", "New title"], ("os.rename", "README.md", "1")))
    assert (folder / "README.md").read_text(encoding="utf-8") == card
    assert leftovers(folder / "README.md")
    assert run(["card", str(folder), "--title", "New title"], ("none", "", "1")).returncode == 0
    assert "New title" in (folder / "README.md").read_text(encoding="utf-8")
    assert leftovers(folder / "README.md") == []


def test_a_kill_between_the_portable_renames_is_repaired_by_the_next_write(corpus, tmp_path):
    """Without renameat2 the swap takes two renames; a kill between them leaves the old folder as a backup, which
    the next write to the destination puts back before anything else."""
    destination = old_destination(tmp_path / "tokenizer")
    arguments = ["tokenizer", "train", str(corpus), "--vocab-size", "300", "--output", str(destination), "--overwrite"]
    assert killed(run(arguments, ("os.rename", ".staging", "1"), "--no-exchange"))
    assert not destination.exists() and any(name.endswith(".old") for name in leftovers(destination))
    remove_stale_leftovers(destination)
    assert holds_the_old_result(destination) and leftovers(destination) == []
    assert run(arguments, ("none", "", "1"), "--no-exchange").returncode == 0
    assert len(GLMTokenizer.from_pretrained(destination)) == 300 and leftovers(destination) == []


def test_a_failing_write_keeps_the_old_folder(tmp_path):
    destination = old_destination(tmp_path / "out")
    with pytest.raises(RuntimeError), staged_folder(destination, overwrite=True) as staging:
        (staging / "half.bin").write_bytes(b"\0")
        raise RuntimeError("the write failed")
    assert holds_the_old_result(destination) and leftovers(destination) == []


def test_results_respect_the_umask(corpus, tmp_path):
    previous = os.umask(0o027)
    try:
        main(["tokenizer", "train", str(corpus), "--vocab-size", "300", "--output", str(tmp_path / "tok")])
    finally:
        os.umask(previous)
    assert oct((tmp_path / "tok").stat().st_mode & 0o777) == oct(0o750)
    assert oct((tmp_path / "tok" / "tokenizer.json").stat().st_mode & 0o777) == oct(0o640)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _copy(source: Path, destination: Path) -> Path:
    destination.mkdir(parents=True)
    for path in source.iterdir():
        (destination / path.name).write_bytes(path.read_bytes())
    return destination


@pytest.mark.parametrize("where", ["same", "parent", "inside"])
def test_convert_refuses_a_destination_that_is_contains_or_lies_inside_the_source(thudm_chatglm, tmp_path, where):
    source = _copy(thudm_chatglm, tmp_path / "thudm" / "ckpt")
    before = sorted(os.listdir(source))
    destination = {"same": source, "parent": source.parent, "inside": source / "converted"}[where]
    with pytest.raises(SystemExit) as error:
        main(["convert", str(source), str(destination), "--overwrite"])
    relation = {"same": "is", "parent": "contains", "inside": "lies inside"}[where]
    assert f"{relation} the source" in str(error.value)
    assert sorted(os.listdir(source)) == before


def test_quantize_and_tokenizer_train_refuse_to_overwrite_their_input(saved_model, corpus, tmp_path):
    with pytest.raises(SystemExit, match="is the source"):
        main(["quantize", str(saved_model), str(saved_model), "--overwrite"])
    assert (saved_model / "model.safetensors").is_file()
    with pytest.raises(SystemExit, match="contains the source"):
        main(["tokenizer", "train", str(corpus), "--vocab-size", "300", "--output", str(corpus.parent), "--overwrite"])
    assert corpus.read_text(encoding="utf-8") == TOKENIZER_CORPUS


def test_tokenizer_train_refuses_a_file_or_a_non_empty_folder_as_output(corpus, tmp_path):
    existing = tmp_path / "existing.txt"
    existing.write_text("keep me", encoding="utf-8")
    with pytest.raises(SystemExit, match="is a file"):
        main(["tokenizer", "train", str(corpus), "--vocab-size", "300", "--output", str(existing)])
    full = old_destination(tmp_path / "full")
    with pytest.raises(SystemExit, match="not empty.*--overwrite"):
        main(["tokenizer", "train", str(corpus), "--vocab-size", "300", "--output", str(full)])
    assert existing.read_text(encoding="utf-8") == "keep me" and holds_the_old_result(full)
