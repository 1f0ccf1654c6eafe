"""GLM pipelines, registered on `import glm_hf`:

- `pipeline("fill-blank")`: fills every `[MASK]`/`[sMASK]`/`[gMASK]` of a text left to right, each fill
  conditioning on the earlier ones (GLM's autoregressive blank infilling); generation kwargs pass through.
- `pipeline("cloze-classification")`: scores candidate labels as fills of the text's blank (or of a pattern's),
  all candidates in one forward pass; returns labels sorted by probability.

`pipeline("text-generation")` needs nothing extra: it loads `GLMForCausalLM` through `AutoModelForCausalLM`.
"""

import torch
from transformers import AutoModelForSeq2SeqLM, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .modeling_glm import choice_scores

DEFAULT_MAX_NEW_TOKENS = 32


class _GLMPipeline(Pipeline):
    """Checks that the model is a GLM with its language-modelling head and the tokenizer knows GLM's tokens."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not hasattr(self.model.config, "blank_token_ids") or not self.model.can_generate():
            raise ValueError(
                f"The {self.task} pipeline needs a GLM with its language-modelling head "
                f"(GLMForConditionalGeneration), got {type(self.model).__name__}."
            )
        if not hasattr(self.tokenizer, "mask_token_ids"):
            raise ValueError(f"The {self.task} pipeline needs a GLMTokenizer, got {type(self.tokenizer).__name__}.")

    def _blank_ids(self) -> set[int]:
        return set(self.tokenizer.mask_token_ids)

    def _context_ids(self, text: str) -> list[int]:
        """The text's ids with the special tokens the tokenizer adds, except generation markers: ChatGLM's tokenizer
        appends `[gMASK] <sop>` (a left-to-right generation request), which is not part of a text to fill."""
        ids = self.tokenizer(text)["input_ids"]
        if self.tokenizer.sop_token_id not in ids:
            return ids
        plain = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        start = next((i for i in range(len(ids)) if ids[i : i + len(plain)] == plain), None)
        if start is None:
            return ids
        markers = self._blank_ids() | {self.tokenizer.sop_token_id}
        suffix = [token for token in ids[start + len(plain) :] if token not in markers]
        return ids[: start + len(plain)] + suffix

    def _check_length(self, ids: list[int], extra: int) -> None:
        limit = self.model.config.max_position_embeddings
        if self.model.config.position_encoding == "learned_2d" and len(ids) + 1 > limit:
            raise ValueError(
                f"The input has {len(ids)} tokens; this model's positions cover {limit} (max_position_embeddings). "
                "Shorten the text."
            )
        if extra < 1:
            raise ValueError("max_new_tokens must be at least 1.")


class FillBlankPipeline(_GLMPipeline):
    """Text with blanks → `{"filled_text": ..., "fills": [...]}`: every blank filled, left to right, each fill
    generated with the earlier fills already in place. Options are `generate()` options (`max_new_tokens` per
    blank, default 32; `do_sample`, `num_beams`, ...); a fill that reaches `max_new_tokens` without
    `<|endofpiece|>` is kept as generated and flagged in `"finished"`."""

    def _sanitize_parameters(self, **generate_kwargs):
        generate_kwargs.setdefault("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
        return {"max_new_tokens": generate_kwargs["max_new_tokens"]}, generate_kwargs, {}

    def preprocess(self, text: str, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> dict:
        if not isinstance(text, str):
            raise ValueError(f"fill-blank takes text (or a list of texts), got {type(text).__name__}.")
        ids = self._context_ids(text)
        if not self._blank_ids() & set(ids):
            raise ValueError(
                f"No blank to fill in {text[:80]!r}: write [MASK], [sMASK] or [gMASK] where text is missing."
            )
        self._check_length(ids, max_new_tokens)
        return {"input_ids": ids}

    def _forward(self, model_inputs: dict, **generate_kwargs) -> dict:
        ids, fills, finished = list(model_inputs["input_ids"]), [], []
        stops = {self.tokenizer.eop_token_id, self.tokenizer.eos_token_id}
        blanks = self._blank_ids()
        while blanks & set(ids):
            blank = next(i for i, token in enumerate(ids) if token in blanks)
            output = self.model.generate(torch.tensor([ids], device=self.device), **generate_kwargs)
            generated = output[0, len(ids) + 1 :].tolist()
            end = next((i for i, token in enumerate(generated) if token in stops), None)
            fill = generated if end is None else generated[:end]
            fills.append(fill)
            finished.append(end is not None)
            ids = ids[:blank] + fill + ids[blank + 1 :]
        return {"input_ids": ids, "fills": fills, "finished": finished}

    def postprocess(self, model_outputs: dict) -> dict:
        decode = self.tokenizer.decode
        return {
            "filled_text": decode(model_outputs["input_ids"], skip_special_tokens=True),
            "fills": [decode(fill, skip_special_tokens=True) for fill in model_outputs["fills"]],
            "finished": model_outputs["finished"],
        }


class ClozeClassificationPipeline(_GLMPipeline):
    """`(text, candidate_labels)` → `{"sequence", "labels", "scores"}`: each label is scored by the log-probability
    of generating it into the text's first blank (mean over its tokens, or their sum: `config.choice_scoring`);
    with `pattern`, e.g. "{text} It was [MASK].", a text without a blank is put into the pattern first. Scores are
    softmax-normalised over the labels; all labels share one forward pass."""

    def _sanitize_parameters(self, candidate_labels=None, pattern=None, **kwargs):
        if kwargs:
            raise ValueError(f"cloze-classification takes candidate_labels and pattern, got {sorted(kwargs)}.")
        preprocess = {}
        if candidate_labels is not None:
            preprocess["candidate_labels"] = candidate_labels
        if pattern is not None:
            preprocess["pattern"] = pattern
        return preprocess, {}, {}

    def preprocess(self, text: str, candidate_labels=None, pattern: str | None = None) -> dict:
        if isinstance(candidate_labels, str):
            candidate_labels = [label.strip() for label in candidate_labels.split(",")]
        if not candidate_labels:
            raise ValueError("cloze-classification needs candidate_labels, e.g. ['great', 'terrible'].")
        blank_tokens = self.tokenizer.convert_ids_to_tokens(self.tokenizer.mask_token_ids)
        if not any(blank in text for blank in blank_tokens):
            if pattern is None:
                raise ValueError(f"No blank in {text[:80]!r}: add [MASK] or pass pattern='{{text}} It was [MASK].'.")
            text = pattern.format(text=text)
        space = " " if any(f" {blank}" in text for blank in blank_tokens) else ""
        context = self.tokenizer([text])
        self._check_length(context["input_ids"][0], 1)
        batch = self.tokenizer.build_inputs_for_multiple_choice(
            context, [[space + label for label in candidate_labels]]
        )
        return {**batch, "sequence": text, "candidate_labels": list(candidate_labels)}

    def _forward(self, model_inputs: dict) -> dict:
        names = ("input_ids", "position_ids", "attention_mask")
        hidden = self.model.glm(**{name: model_inputs[name] for name in names}).last_hidden_state
        labels, index = model_inputs["choice_labels"], model_inputs["choice_index"]
        count = len(model_inputs["candidate_labels"])
        return {
            "scores": choice_scores(self.model.lm_head, hidden, labels, index, count, self.model.config)[0],
            "sequence": model_inputs["sequence"],
            "candidate_labels": model_inputs["candidate_labels"],
        }

    def postprocess(self, model_outputs: dict) -> dict:
        probabilities = model_outputs["scores"].softmax(-1).tolist()
        ranked = sorted(zip(model_outputs["candidate_labels"], probabilities, strict=True), key=lambda p: -p[1])
        return {
            "sequence": model_outputs["sequence"],
            "labels": [label for label, _ in ranked],
            "scores": [score for _, score in ranked],
        }


def register_pipelines() -> None:
    """Registers `fill-blank` and `cloze-classification` with transformers' pipeline registry."""
    for task, pipeline_class in (
        ("fill-blank", FillBlankPipeline),
        ("cloze-classification", ClozeClassificationPipeline),
    ):
        if task not in PIPELINE_REGISTRY.get_supported_tasks():
            PIPELINE_REGISTRY.register_pipeline(
                task, pipeline_class=pipeline_class, pt_model=AutoModelForSeq2SeqLM, type="text"
            )


__all__ = ["ClozeClassificationPipeline", "FillBlankPipeline", "register_pipelines"]
