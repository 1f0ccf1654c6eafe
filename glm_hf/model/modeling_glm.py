"""PyTorch GLM: autoregressive blank infilling with 2D positions (GLM, GLM-130B-style, ChatGLM-6B-style).

The heads, each with one job (README's heads table says which client uses which), over the shared body in
`body_glm.py`; every layout rule they apply comes from `blank_infilling.py`.
"""

import copy

import torch
from torch import nn
from transformers import GenerationMixin
from transformers.cache_utils import Cache
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    MultipleChoiceModelOutput,
    SequenceClassifierOutput,
)
from transformers.utils import can_return_tuple

from .blank_infilling import (
    LEFT_TO_RIGHT_PREFIX_LENGTH,
    check_not_empty,
    check_room_to_generate,
    choice_scores,
    cloze_layouts,
    continue_plain_prompts,
    embedded_prompt_layout,
    generation_layout,
    left_padded_part_a,
    read_padding_mask,
    span_continuation,
)
from .body_glm import GLMLeftToRightModel, GLMModel, GLMPreTrainedModel
from .chat_glm import GLMChatMixin
from .configuration_glm import GLMConfig
from .transformers_compat import cache_output, output_cache, select_cache


class GLMWithVocabularyHead(GLMPreTrainedModel):
    """A `GLMModel` plus the output layer onto the vocabulary (tied to the word embeddings unless
    `config.tie_word_embeddings` is False): the shared body of every GLM head, which all score tokens. `body_class`
    is the body's reading of the inputs (the causal head's reads plain text left to right); its weights are the
    same in every head."""

    _tied_weights_keys = {"lm_head.weight": "glm.word_embeddings.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}

    body_class: type[GLMModel] = GLMModel

    def __init__(self, config: GLMConfig):
        super().__init__(config)
        self.glm = self.body_class(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)


class GLMGenerativeHead(GLMWithVocabularyHead, GenerationMixin):
    """What both generating heads share: the loss they train with (`loss_kind`, the subclass's), generation stopping
    at `<|endofpiece|>` or eos, and the 2D padding mask kept for static caches (their forwards build GLM's masks)."""

    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}
    loss_kind: str

    def __init__(self, config: GLMConfig):
        super().__init__(config)
        self.loss_type = self.loss_kind
        self.post_init()
        stop_ids = [i for i in (config.eop_token_id, config.eos_token_id) if i is not None]
        self.generation_config.eos_token_id = stop_ids or None

    def _loss(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        num_items_in_batch: torch.Tensor | int | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """The head's cross-entropy: summed, then divided by the labelled tokens counted on the device (or by the
        Trainer's `num_items_in_batch`), never by less than 1. So a batch whose labels are all -100 gives a loss of 0
        and zero gradients, where a plain mean over no tokens is NaN that a Trainer would log and, with loss scaling
        or clipping, carry into the weights; the count is never read back, so a step costs no host sync."""
        if num_items_in_batch is None:
            counted = kwargs.get("shift_labels")
            if counted is None:
                counted = labels[..., 1:] if self.loss_kind == "ForCausalLM" else labels
            num_items_in_batch = (counted != -100).sum()
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.clamp(min=1)
        else:
            num_items_in_batch = max(num_items_in_batch, 1)
        return self.loss_function(
            logits=logits,
            labels=labels,
            vocab_size=self.config.vocab_size,
            num_items_in_batch=num_items_in_batch,
            **kwargs,
        )

    def create_masks_for_generate(
        self, config, inputs_embeds, attention_mask, *args, cache=None, is_first_iteration=False, **kwargs
    ):
        """Keeps the 2D padding mask that generate() would turn into a plain causal 4D mask for static caches (the
        forwards build GLM's masks from it). On decode steps it is padded to the static cache's size, so compiled
        decoding sees the same shapes at every step."""
        if attention_mask is None or attention_mask.dim() != 2 or is_first_iteration or cache is None:
            return attention_mask
        slots = cache.get_mask_sizes(inputs_embeds.shape[1], 0)[0]
        return torch.nn.functional.pad(attention_mask, (0, slots - attention_mask.shape[-1]))

    @staticmethod
    def _padding_for_generate(kwargs: dict) -> None:
        """Turns a 2D padding mask given to generate() into HF's 1/0 form (generate() extends it with ones each
        step, which would be wrong for an additive mask)."""
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() == 2:
            kwargs["attention_mask"] = read_padding_mask(mask).long()

    def _check_room_to_generate(self, last_position: int, generation_config, kwargs: dict, prompt_length: int):
        """Refuses, before any token is generated, a call whose new tokens need positions past the position table
        (see `check_room_to_generate`)."""
        settings = copy.deepcopy(generation_config if generation_config is not None else self.generation_config)
        settings.update(**{name: kwargs[name] for name in ("max_new_tokens", "max_length") if name in kwargs})
        new_tokens = settings.max_new_tokens
        if new_tokens is None:
            new_tokens = settings.max_length - prompt_length
        check_room_to_generate(last_position, new_tokens, self.config.max_position_embeddings)


class GLMForConditionalGeneration(GLMChatMixin, GLMGenerativeHead):
    """GLM with its language-modelling head: blank infilling, and left-to-right generation after `[gMASK]`; also
    the chat head (`chat`, `stream_chat` as THUDM's ChatGLM-6B has them, and `glm-hf serve`): a chat prompt is read
    as GLM reads a generation request, the conversation bidirectionally as Part A.

    Labels follow GLM's alignment: the logit at position i predicts `labels[i]` (no shift; -100 is ignored).
    """

    loss_kind = "ForMaskedLM"

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        prompt_position_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        prompt_position_ids (`torch.LongTensor` `[batch, 2, prompt]`, *optional*):
            What `generate()` passes instead of `position_ids`: the 2D positions of the prompt, whose last span every
            later token continues (same position, block position + 1). The positions of the tokens of each call are
            read off by their index in the sequence, so cache continuation and assisted decoding's drafts need no
            position bookkeeping.
        labels (`torch.LongTensor` of shape `[batch, seq]`, *optional*):
            Targets aligned with the inputs: `labels[i]` is the token the model should predict at position i
            (in Part B, the next span token or `<|endofpiece|>`); -100 positions are ignored. In training mode
            only the labelled positions are projected onto the vocabulary (GLM's loss covers Part B only), and
            `logits` is None; in eval mode, or without labels, full logits are returned.
        """
        cache = select_cache(cache, past_key_values)
        if position_ids is None and prompt_position_ids is not None:
            seq_len = (input_ids if input_ids is not None else inputs_embeds).shape[1]
            past_length = cache.get_seq_length() if cache is not None else 0
            position_ids = span_continuation(prompt_position_ids, past_length, seq_len)
        outputs: BaseModelOutputWithPast = self.glm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        if labels is not None and labels.shape != hidden_states.shape[:2]:
            raise ValueError(
                f"labels must align with the inputs ([batch, seq] = {list(hidden_states.shape[:2])}), "
                f"got {list(labels.shape)}."
            )
        loss = logits = None
        if labels is not None and self.training:
            # GLM learns only from Part B, so only the labelled positions go through the vocabulary projection.
            labelled = labels != -100
            loss = self._loss(self.lm_head(hidden_states[labelled]), labels[labelled], **kwargs)
        else:
            keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            logits = self.lm_head(hidden_states[:, keep, :])
            if labels is not None:
                loss = self._loss(logits, labels, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            **cache_output(output_cache(outputs)),
        )

    @torch.no_grad()
    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, **kwargs):
        """Fills the first blank (`[MASK]`/`[sMASK]`/`[gMASK]`) of each prompt (ChatGLM-style configs: the first
        `[gMASK]` if there is one, `config.blank_fill_order`); `[gMASK]` at the end of the prompt
        is left-to-right generation, and prompts without any blank get one appended (plain continuation).
        Returns `prompt + <|startofpiece|> + fill` per row; generation stops at `<|endofpiece|>`. Batched prompts
        must be left-padded. All `GenerationMixin.generate` options apply. A prompt given as `inputs_embeds` (no
        token ids to find a blank in) is continued left to right; only the new tokens are returned, as for any
        model given embeddings."""
        input_ids = inputs if inputs is not None else kwargs.pop("input_ids", None)
        if input_ids is None and kwargs.get("inputs_embeds") is not None:
            return super().generate(generation_config=generation_config, **self._continue_embedded_prompt(kwargs))
        if input_ids is None:
            raise ValueError("GLM generate() needs input_ids holding a blank ([MASK], [sMASK] or [gMASK]).")
        check_not_empty(input_ids)
        self._padding_for_generate(kwargs)
        attention_mask = kwargs.get("attention_mask")
        if attention_mask is not None and attention_mask.dim() == 1:
            # A training batch (Part A lengths as the mask, as Seq2SeqTrainer passes it with predict_with_generate):
            # generate from each row's Part A only; its Part B holds the reference answer.
            kwargs.pop("labels", None)
            kwargs.pop("position_ids", None)
            input_ids, kwargs["attention_mask"] = left_padded_part_a(
                input_ids, attention_mask, self.config.pad_token_id
            )
        if kwargs.get("position_ids") is None:
            input_ids, kwargs["attention_mask"] = continue_plain_prompts(
                input_ids, kwargs.get("attention_mask"), self.config
            )
            layout = generation_layout(
                input_ids,
                self.config.blank_token_ids,
                self.config.sop_token_id,
                kwargs.get("attention_mask"),
                self.config.first_filled_token_id,
            )
            input_ids = layout.input_ids
            kwargs["attention_mask"] = layout.attention_mask
            kwargs["position_ids"] = layout.position_ids
        # GLM's positions travel as the prompt's (see forward): transformers' own position bookkeeping advances every
        # row of a position tensor, which is wrong for GLM's first row (the blank's position stays fixed).
        kwargs["prompt_position_ids"] = kwargs.pop("position_ids")
        last_block_position = int(kwargs["prompt_position_ids"][:, 1, -1].max())
        self._check_room_to_generate(last_block_position, generation_config, kwargs, input_ids.shape[1])
        return super().generate(input_ids, generation_config, **kwargs)

    def _prepare_position_ids_for_generation(self, inputs_tensor, model_kwargs):
        """None: positions come from `prompt_position_ids` (see generate)."""
        return None

    def _continue_embedded_prompt(self, kwargs: dict) -> dict:
        """generate() kwargs for an embedded prompt: the embeddings as Part A, then `[gMASK] <|startofpiece|>`."""
        embeds = kwargs.pop("inputs_embeds")
        batch, seq_len = embeds.shape[:2]
        mask, positions = embedded_prompt_layout(kwargs.pop("attention_mask", None), batch, seq_len, embeds.device)
        ids = torch.tensor([[self.config.gmask_token_id, self.config.sop_token_id]], device=embeds.device)
        embeds = torch.cat([embeds, self.get_input_embeddings()(ids).to(embeds.dtype).expand(batch, -1, -1)], 1)
        return {**kwargs, "inputs_embeds": embeds, "attention_mask": mask, "prompt_position_ids": positions}


class GLMForCausalLM(GLMGenerativeHead):
    """GLM as a causal language model over plain text: what `AutoModelForCausalLM` users (TRL, lm-eval, the causal
    recipe with `DataCollatorForLanguageModeling(mlm=False)`, text generation, serving) expect.

    Text is read strictly left to right in GLM's own left-to-right layout (`GLMLeftToRightModel`, its body): after
    `[gMASK] <|startofpiece|>`, as one causal Part B span filling a `[gMASK]` at position 0, which is what GLM and
    ChatGLM are trained to continue (measured against THUDM's plain causal default in
    `benchmarks/bench_causal_layout.py`). The two prefix tokens stay inside: logits, labels, the KV cache and
    generate()'s output cover the caller's tokens only. Labels follow HF's causal convention (labels = input_ids,
    shifted inside, -100 ignored); padding on either side never changes real tokens' logits; packed rows (positions
    restarting inside a row) give each document its own logits. Blank tokens in the text are read as ordinary
    tokens; blank infilling is `GLMForConditionalGeneration`'s job. Same weights as every head.
    """

    loss_kind = "ForCausalLM"
    body_class = GLMLeftToRightModel

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        prefix_key_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        attention_mask (`torch.Tensor`, *optional*): the padding mask `[batch, past + seq]` (either side), or a 4D
            mask over the caller's tokens (see `GLMLeftToRightModel.forward`).
        position_ids (`torch.LongTensor` `[batch, seq]`, *optional*): text positions, counting real tokens from 0;
            derived from the padding mask when omitted. Positions that restart inside a row start a new document
            (packed sequences, e.g. `DataCollatorWithFlattening`): documents never see each other.
        labels (`torch.LongTensor` `[batch, seq]`, *optional*): HF's causal labels (`labels[i]` is predicted from
            tokens `<= i - 1`; usually `input_ids`, with -100 where no loss is wanted).
        prefix_key_values (*optional*): the prefix's keys and values from `left_to_right_prefix_key_values()`;
            `generate()` computes them once per call instead of once per step.
        """
        outputs: BaseModelOutputWithPast = self.glm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            past_key_values=past_key_values,
            prefix_key_values=prefix_key_values,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])
        loss = None
        if labels is not None:
            if labels.shape != hidden_states.shape[:2]:
                raise ValueError(
                    f"labels must have the inputs' shape {list(hidden_states.shape[:2])}, got {list(labels.shape)}."
                )
            loss = self._loss(logits, labels, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            **cache_output(output_cache(outputs)),
        )

    def left_to_right_prefix_key_values(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the keys and values of `[gMASK] <|startofpiece|>`: the same for every text (the prefix sees
        no text), so they are computed once and put before each layer's cached keys."""
        return self.glm.left_to_right_prefix_key_values()

    @torch.no_grad()
    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, **kwargs):
        """`GenerationMixin.generate`, with the prefix's keys and values computed once for the whole call.
        Returns `input_ids + new tokens`, as for any causal LM."""
        input_ids = inputs if inputs is not None else kwargs.get("input_ids")
        if input_ids is not None:
            check_not_empty(input_ids)
            self._padding_for_generate(kwargs)
            mask = kwargs.get("attention_mask")
            text_length = input_ids.shape[1] if mask is None else int(mask.sum(-1).max())
            last_position = text_length - 1 + LEFT_TO_RIGHT_PREFIX_LENGTH
            self._check_room_to_generate(last_position, generation_config, kwargs, input_ids.shape[1])
        if kwargs.get("prefix_key_values") is None:
            kwargs["prefix_key_values"] = self.left_to_right_prefix_key_values()
        return super().generate(inputs, generation_config, **kwargs)


class GLMForMultipleChoice(GLMWithVocabularyHead):
    """Cloze multiple choice: each choice is scored by the log-probability of generating it into the blank
    (`config.choice_scoring`: mean over its tokens, or THUDM's sum), all choices of an example in one forward pass.

    Inputs come from `GLMTokenizer.build_inputs_for_multiple_choice`: every choice is its own Part B span that sees
    Part A and its own prefix only. `logits` are the choice scores `[batch, choices]` (absent choices get -inf);
    with `labels` (the correct choice per example) the loss is the cross-entropy over choices. The weights are
    those of `GLMForConditionalGeneration`, so a pretrained checkpoint loads directly.
    """

    def __init__(self, config: GLMConfig):
        super().__init__(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor,
        choice_labels: torch.LongTensor,
        choice_index: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        num_choices: int | None = None,
        **kwargs,
    ) -> MultipleChoiceModelOutput:
        r"""
        choice_labels (`torch.LongTensor` `[batch, seq]`): the choice token each position predicts, -100 elsewhere.
        choice_index (`torch.LongTensor` `[batch, seq]`): which choice a labelled position belongs to, -1 elsewhere.
        labels (`torch.LongTensor` `[batch]`, *optional*): the index of the correct choice.
        num_choices (`int`, *optional*): width of `logits`; defaults to the most choices in the batch.
        """
        outputs = self.glm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)
        scores = choice_scores(
            self.lm_head,
            outputs.last_hidden_state,
            choice_labels,
            choice_index,
            num_choices,
            self.config.choice_scoring,
        )
        loss = nn.functional.cross_entropy(scores, labels) if labels is not None else None
        return MultipleChoiceModelOutput(
            loss=loss, logits=scores, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class GLMForSequenceClassification(GLMWithVocabularyHead):
    """Classification as a cloze task (PET): the text is put into the pattern of `config.cloze_prefix_ids` /
    `cloze_suffix_ids`, and label i is scored by generating its verbalizer `config.verbalizer_ids[i]` into the
    pattern's blank; softmax over `logits` `[batch, labels]` is p(y|x) normalised over labels. Inputs are plain
    tokenizer output, so `pipeline("text-classification")` works. The pattern always applies when the config has one
    (a text holding its own blank says so with `plain_text=False`), so a `[MASK]` in a text cannot replace it;
    tokenize untrusted text with `split_special_tokens=True` (there, `classifier(texts, split_special_tokens=True)`)
    so that such a string stays text: a blank token inside a text in the pattern is refused."""

    def __init__(self, config: GLMConfig):
        if not config.verbalizer_ids:
            raise ValueError(
                "GLMForSequenceClassification needs config.verbalizer_ids (one token id list per label); build them "
                "with glm_hf.training.cloze.cloze_config(tokenizer, pattern, label_words)."
            )
        if len(config.id2label) != len(config.verbalizer_ids):
            raise ValueError(
                f"config has {len(config.id2label)} labels (id2label) but {len(config.verbalizer_ids)} verbalizers; "
                "give one verbalizer per label (cloze_config sets both)."
            )
        super().__init__(config)
        self.num_labels = len(config.verbalizer_ids)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        plain_text: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        r"""
        attention_mask (`torch.Tensor` `[batch, seq]`, *optional*): the tokenizer's padding mask (either side).
        labels (`torch.LongTensor` `[batch]`, *optional*): the label of each text; loss is the cross-entropy.
        plain_text (`bool`, *optional*): `True` (the default when the config has a pattern): each text is plain
            text, put into the pattern, whose blank is scored; a blank or `<|startofpiece|>` token inside a text is
            refused. `False` (the default without a pattern): each text is GLM markup holding its own blank, used
            as it is.
        """
        batch = cloze_layouts(input_ids, attention_mask, self.config, plain_text)
        outputs = self.glm(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
            **kwargs,
        )
        scores = choice_scores(
            self.lm_head,
            outputs.last_hidden_state,
            batch["choice_labels"],
            batch["choice_index"],
            self.num_labels,
            self.config.choice_scoring,
        )
        loss = nn.functional.cross_entropy(scores, labels) if labels is not None else None
        return SequenceClassifierOutput(
            loss=loss, logits=scores, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


# The Auto class of each head: every saved folder's `auto_map` names them all (so it loads with
# `trust_remote_code=True` where glm_hf is not installed), and the glm_hf package registers them with transformers.
AUTO_CLASSES: dict[str, type[GLMPreTrainedModel]] = {
    "AutoModel": GLMModel,
    "AutoModelForCausalLM": GLMForCausalLM,
    "AutoModelForSeq2SeqLM": GLMForConditionalGeneration,
    "AutoModelForMultipleChoice": GLMForMultipleChoice,
    "AutoModelForSequenceClassification": GLMForSequenceClassification,
}
for auto_class, head in AUTO_CLASSES.items():
    head.register_for_auto_class(auto_class)
GLMPreTrainedModel.remote_code_auto_map = {
    auto_class: f"{__name__.rpartition('.')[2]}.{head.__name__}" for auto_class, head in AUTO_CLASSES.items()
}

__all__ = [
    "AUTO_CLASSES",
    "GLMPreTrainedModel",
    "GLMModel",
    "GLMForCausalLM",
    "GLMForConditionalGeneration",
    "GLMForMultipleChoice",
    "GLMForSequenceClassification",
]
