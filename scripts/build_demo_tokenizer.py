"""Rebuilds the demo tokenizer shipped in `glm_hf/demo/tokenizer` (run after changing the demo corpus).

python scripts/build_demo_tokenizer.py
"""

import shutil

from glm_hf.demo.run import DEMO_TOKENIZER_DIR, train_demo_tokenizer


def main() -> None:
    tokenizer = train_demo_tokenizer()
    shutil.rmtree(DEMO_TOKENIZER_DIR, ignore_errors=True)
    tokenizer.save_pretrained(DEMO_TOKENIZER_DIR)
    print(f"saved a {len(tokenizer):,}-token demo tokenizer to {DEMO_TOKENIZER_DIR}")


if __name__ == "__main__":
    main()
