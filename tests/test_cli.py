"""The `glm-hf` command line."""

from transformers import AutoModelForSeq2SeqLM

from glm_hf import GLMForConditionalGeneration
from glm_hf.cli import main


def test_tiny_trains_generates_and_saves(tmp_path, capsys):
    main(["tiny", "--steps", "60", "--eval-prompts", "5", "--save", str(tmp_path)])
    printed = capsys.readouterr().out
    losses = [float(line.split("loss")[1]) for line in printed.splitlines() if line.startswith("step")]
    assert losses[-1] < losses[0]
    assert "exact fills:" in printed
    assert isinstance(AutoModelForSeq2SeqLM.from_pretrained(tmp_path), GLMForConditionalGeneration)


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
