"""The files that travel: exactly the modules `save_pretrained` copies next to a checkpoint's weights.

A saved folder loads with `trust_remote_code=True` where glm_hf is not installed, so these modules import only
each other (flat sibling imports), transformers, torch and their dependencies; never the rest of glm_hf.
`tests/model/test_travelling_files.py` checks it.
"""
