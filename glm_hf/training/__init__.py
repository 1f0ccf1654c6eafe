"""Training GLM: the blank-infilling collator, cloze (PET) fine-tuning, seq2seq fine-tuning and pretraining."""
