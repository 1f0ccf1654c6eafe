"""Writes the ids THUDM's own training tokenizer gives the test texts, for tests/fixtures/thudm-command-token-ids.json.

Runs `data_utils/tokenization.py` of a THUDM/GLM checkout (nothing of it is copied here) on the vocabulary files in
`../shared/fixtures/thudm-vocab`, each tokenizer configured as its released GLMs were trained
(`config_tasks/model_blocklm_*.sh`): GPT-2 with task masks (glm-2b, glm-10b), RoBERTa and BERT without
(glm-roberta-large, glm-large), the Chinese SentencePiece one with task masks and `--fix-command-token`
(glm-large-chinese). Only the tokenizer is needed, so the modules it imports for other work (nltk, the training
`utils`, the download helpers) are stood in for.

    python scripts/thudm_reference_ids.py PATH/TO/THUDM-GLM > tests/fixtures/thudm-command-token-ids.json

Needs torch, sentencepiece and regex.
"""

import argparse
import contextlib
import importlib
import json
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

THUDM_VOCAB = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "thudm-vocab"

# Every special string any GLM vocabulary has (THUDM's command tokens, fairseq's and SentencePiece's own symbols,
# the Hub's extra names), alone, glued to words, between runs of spaces, and in Chinese text.
TEXTS = [
    "Special literals: <|endoftext|> [CLS] [SEP] [UNK] <|startofpiece|> <|endofpiece|>",
    "Blanks: [MASK] [sMASK] [gMASK] end",
    "Others: [PAD] <pad> <s> </s> <unk> <mask> [UNUSED1] [UNUSED2] [dBLOCK]",
    "[mask] [Cls] <|EndOfText|> [unk]",
    "<|endoftext|><|endoftext|>[SEP][CLS]<|endoftext",
    "glued[CLS]x[SEP]y<|endoftext|>z[UNK]w<|startofpiece|>v<|endofpiece|>u[MASK]t[sMASK]s[gMASK]",
    "  [MASK]  spaces  [SEP]  <|endoftext|>  ",
    "北京[UNK]是[MASK]的首都<|endoftext|>中国 [CLS] 你好 [SEP]",
]
# Where THUDM's code looks for each vocabulary file, relative to the working directory.
FILES = {
    ".pytorch_pretrained_bert/gpt2-vocab.json": "gpt2-vocab.json",
    ".pytorch_pretrained_bert/gpt2-merges.txt": "gpt2-merges.txt",
    ".pytorch_pretrained_bert/roberta-vocab.json": "roberta-vocab.json",
    ".pytorch_pretrained_bert/roberta-merges.txt": "roberta-merges.txt",
    ".pytorch_pretrained_bert/bert-large-uncased-vocab.txt": "bert-large-uncased-vocab.txt",
    "chinese_sentencepiece/cog-pretrain.model": "cog-pretrain.model",
}


def _import_thudm_tokenization(checkout: Path) -> types.ModuleType:
    """THUDM's `data_utils.tokenization`, with stand-ins for the modules only its other functions use."""
    stubs = {"nltk": {"tokenize": None}, "nltk.tokenize": {}, "utils": {"print_rank_0": lambda *args: None}}
    stubs["data_utils.file_utils"] = {"cached_path": lambda path, cache_dir=None: path}  # the files are local
    for name, attributes in stubs.items():
        sys.modules[name] = types.ModuleType(name)
        sys.modules[name].__dict__.update(attributes)
    package = types.ModuleType("data_utils")
    package.__path__ = [str(checkout / "data_utils")]  # its __init__ imports the data pipeline: skipped
    sys.modules["data_utils"] = package
    return importlib.import_module("data_utils.tokenization")


def reference_ids(checkout: Path, vocab: Path) -> dict:
    tokenization = _import_thudm_tokenization(checkout)
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        for target, name in FILES.items():
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.symlink(vocab / name, target)
        with contextlib.redirect_stdout(sys.stderr):  # THUDM's BERT tokenizer prints as it loads
            tokenizers = {
                "gpt2": tokenization.GPT2BPETokenizer("gpt2", add_block_symbols=True, add_task_mask=True),
                "roberta": tokenization.GPT2BPETokenizer("roberta", add_block_symbols=True),
                "bert": tokenization.BertWordPieceTokenizer("bert-large-uncased", add_block_symbols=True),
                "cog": tokenization.ChineseSPTokenizer(
                    add_block_symbols=True, add_task_mask=True, fix_command_token=True
                ),
            }
        ids = {
            name: [tokenizer.EncodeAsIds(text).tokenization for text in TEXTS]
            for name, tokenizer in tokenizers.items()
        }
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    return {
        "source": f"THUDM/GLM data_utils/tokenization.py at {commit.strip() or 'an unknown commit'}, EncodeAsIds",
        "texts": TEXTS,
        "ids": ids,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="a THUDM/GLM checkout")
    parser.add_argument("--vocab", type=Path, default=THUDM_VOCAB, help="the THUDM vocabulary files")
    args = parser.parse_args()
    reference = reference_ids(args.checkout.resolve(), args.vocab.resolve())
    # One line per text: the ids of a text side by side.
    lines = ",\n".join(
        f'  "{name}": [\n' + ",\n".join(f"   {json.dumps(row)}" for row in rows) + "\n  ]"
        for name, rows in reference["ids"].items()
    )
    texts = ",\n".join(f"  {json.dumps(text, ensure_ascii=False)}" for text in reference["texts"])
    print(
        f'{{\n "source": {json.dumps(reference["source"])},\n "texts": [\n{texts}\n ],\n "ids": {{\n{lines}\n }}\n}}'
    )


if __name__ == "__main__":
    main()
