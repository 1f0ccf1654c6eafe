"""Paths the tests read: the repository, its examples and the THUDM vocabulary fixtures beside it (`../shared`)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
THUDM_VOCAB = REPO.parent / "shared" / "fixtures" / "thudm-vocab"
