"""`glm-hf demo` (`run.py`): pretrain a small GLM on the embedded bilingual corpus (`corpus.py`) with the shipped
demo tokenizer (`tokenizer/`), then fill held-out blanks."""
