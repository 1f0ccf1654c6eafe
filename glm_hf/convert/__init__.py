"""Importers for THUDM's GLM / ChatGLM artefacts (vocabularies; checkpoints are a later addition)."""
