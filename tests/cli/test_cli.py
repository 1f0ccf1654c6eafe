"""The `glm-hf` command line."""

import sys

import pytest

from glm_hf.cli import main


def test_tokenizer_train_writes_a_loadable_glm_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    from glm_hf import GLMTokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Paris is the capital of France.\n北京是中国的首都。\n" * 100, encoding="utf-8")
    main(["tokenizer", "train", str(corpus), "--vocab-size", "300", "--output", str(tmp_path / "tok")])
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert isinstance(tokenizer, GLMTokenizer)
    assert tokenizer.decode(tokenizer("北京 is the capital.")["input_ids"]) == "北京 is the capital."
    assert tokenizer("北京 is [MASK].")["input_ids"][-2] == tokenizer.mask_token_id


def test_demo_and_pretrain_refuse_up_front_without_matplotlib(tmp_path, monkeypatch):
    """matplotlib is the `demo` extra: without it the commands say how to get it before training anything."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("one line of text\n", encoding="utf-8")
    commands = (
        ["demo", "--output", str(tmp_path / "demo")],
        ["pretrain", "--train-file", str(corpus), "--output", str(tmp_path / "p")],
    )
    for command in commands:
        with pytest.raises(SystemExit) as exit_info:
            main(command)
        assert "pip install 'glm-hf[demo]'" in str(exit_info.value)
    assert not (tmp_path / "demo").exists() and not (tmp_path / "p").exists()


@pytest.mark.parametrize("port", ["99999", "-1", "0", "eighty"])
def test_serve_refuses_a_bad_port_before_loading(port, tmp_path, capsys):
    """A bad port used to load the model, then end in a 41-line uvicorn traceback."""
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", str(tmp_path / "no-model"), "--port", port])
    assert exit_info.value.code == 2
    assert "--port: must be a port number" in capsys.readouterr().err


def test_serve_refuses_a_folder_without_weights_or_tokenizer(tmp_path):
    """A folder with only config.json used to fail inside transformers with "need sentencepiece or tiktoken"."""
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"has no weights \(model.safetensors .*\) and no tokenizer") as exit_info:
        main(["serve", str(tmp_path)])
    assert "\n" not in str(exit_info.value)
