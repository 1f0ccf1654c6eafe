"""Importers for THUDM's GLM and ChatGLM-6B: vocabularies (`vocab.py`) and checkpoints (`checkpoint.py`, `glm-hf
convert`). Never saved with a model; `import glm_hf` hands `convert_checkpoint` to the model code for loading THUDM
folders directly."""
