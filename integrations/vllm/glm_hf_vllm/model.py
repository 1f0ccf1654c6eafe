"""GLM for vLLM: the model behind glm-hf's `GLMForConditionalGeneration` and `GLMForCausalLM` folders.

Each request is one GLM generation request, read exactly as glm-hf's `generate()` reads it:

- The prompt up to its first `<|startofpiece|>` is Part A and is prefilled bidirectionally (vLLM's prefix-LM
  attention); a prompt that already holds Part B (chat templates end in `[gMASK] <|startofpiece|>`) has that
  prefill's attention recomputed under GLM's mask, so Part A never sees Part B.
- A prompt that ends in Part A (`... [gMASK]`, what `generate()` takes) gets `<|startofpiece|>` as its first generated
  token: the logits of that step allow nothing else. That token is then decoded like any span token, so Part B starts
  with it and Part A never saw it.
- 2D positions travel per request as M-RoPE rows (see `layout.py`).

A prompt without a blank cannot be laid out; its request ends at once with `<|endofpiece|>` (an empty answer) and the
worker logs why, since raising here would stop the engine for every request.
"""

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from vllm.config import VllmConfig
from vllm.forward_context import get_forward_context
from vllm.logger import init_logger
from vllm.model_executor.layers.layernorm import LayerNorm
from vllm.model_executor.layers.logits_processor import LogitsProcessor
from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding
from vllm.model_executor.model_loader.weight_utils import default_weight_loader
from vllm.model_executor.models.interfaces import SupportsMRoPE
from vllm.sequence import IntermediateTensors

from .layers import GLMBlock, PrefillSpan, Rotary2D
from .layout import LayoutError, prompt_layout
from .settings import GLMSettings

logger = init_logger(__name__)


class GLMModel(nn.Module):
    """Embeddings with 2D positions (learned tables or rotary), the layers and the final LayerNorm; parameter names
    follow glm-hf's `glm.*` weights."""

    def __init__(self, *, vllm_config: VllmConfig, settings: GLMSettings, prefix: str = ""):
        super().__init__()
        cache_config, quant_config = vllm_config.cache_config, vllm_config.quant_config
        self.settings = settings
        self.word_embeddings = VocabParallelEmbedding(
            settings.vocab_size, settings.hidden_size, quant_config=quant_config, prefix=f"{prefix}.word_embeddings"
        )
        self.rotary = None
        if settings.position_encoding == "learned_2d":
            self.position_embeddings = nn.Embedding(settings.max_positions, settings.hidden_size)
            self.block_position_embeddings = nn.Embedding(settings.max_positions, settings.hidden_size)
        else:
            self.rotary = Rotary2D(settings)
        self.layers = nn.ModuleList(
            GLMBlock(settings, cache_config, quant_config, prefix=f"{prefix}.layers.{i}")
            for i in range(settings.num_layers)
        )
        self.final_layernorm = LayerNorm(settings.hidden_size, eps=settings.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, encoded: torch.Tensor, spans: list[PrefillSpan]) -> torch.Tensor:
        position = torch.div(encoded, self.settings.max_positions, rounding_mode="floor")
        block = encoded - position * self.settings.max_positions
        hidden_states = self.word_embeddings(input_ids)
        rotary = None
        if self.rotary is None:
            hidden_states = hidden_states + self.position_embeddings(position) + self.block_position_embeddings(block)
        else:
            rotary = self.rotary(position, block, hidden_states.dtype)
        for layer in self.layers:
            hidden_states = layer(hidden_states, rotary, spans)
        return self.final_layernorm(hidden_states)


class GLMForConditionalGeneration(nn.Module, SupportsMRoPE):
    """GLM with its output layer (tied to the word embeddings or separate), serving GLM generation requests."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.settings = settings = GLMSettings.from_hf_config(config)
        self.glm = GLMModel(vllm_config=vllm_config, settings=settings, prefix=_join(prefix, "glm"))
        self.lm_head = ParallelLMHead(
            settings.vocab_size,
            settings.hidden_size,
            quant_config=vllm_config.quant_config,
            prefix=_join(prefix, "lm_head"),
        )
        if settings.tie_word_embeddings:
            self.lm_head = self.lm_head.tie_weights(self.glm.word_embeddings)
        self.logits_processor = LogitsProcessor(settings.vocab_size)
        self.end_token_id = settings.eop_token_id if settings.eop_token_id is not None else config.eos_token_id
        # Per sampled row of the step being run: the only token that row may produce, or None. Set by forward and
        # used by the next compute_logits, which the model runner calls right after it on the same rows.
        self._forced_tokens: list[int | None] | None = None

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.glm.word_embeddings(input_ids)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if input_ids is None:
            raise ValueError(
                "GLM needs token ids (its layout is read from the blank and span tokens), not embeddings."
            )
        encoded = positions[0] if positions.dim() == 2 else positions
        spans, self._forced_tokens = self._read_step(input_ids)
        return self.glm(input_ids, encoded, spans)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        logits = self.logits_processor(self.lm_head, hidden_states)
        forced, self._forced_tokens = self._forced_tokens, None
        if logits is None or forced is None or len(forced) != logits.shape[0]:
            return logits
        for row, token in enumerate(forced):
            if token is not None:
                logits[row] = float("-inf")
                logits[row, token] = 0.0
        return logits

    def _read_step(self, input_ids: torch.Tensor) -> tuple[list[PrefillSpan], list[int | None] | None]:
        """The prefills of this step that need GLM's mask recomputed, and per request the token its next sample must
        be (`<|startofpiece|>` after a prompt that ends in Part A). Read from the attention metadata: a request whose
        query covers its whole sequence is a prefill (chunked prefill is off for prefix-LM models)."""
        metadata = get_forward_context().attn_metadata
        if isinstance(metadata, list):
            metadata = metadata[0] if metadata else None
        if not metadata:
            return [], None  # profiling and warm-up runs
        step = metadata[self.glm.layers[0].attention.attn.layer_name]
        starts = step.query_start_loc.tolist()
        seq_lens = step.seq_lens.tolist()
        special = self.settings.layout_tokens
        blank_ids = torch.tensor(sorted(special.blank_ids), device=input_ids.device)
        spans, forced = [], []
        for request, seq_len in enumerate(seq_lens):
            start, end = starts[request], starts[request + 1]
            if end == start:
                continue  # a padding slot of the batch (GPU graphs), no request
            if end - start != seq_len:
                forced.append(None)  # a decode step
                continue
            ids = input_ids[start:end]
            sops = (ids == special.sop_id).nonzero()
            sep = int(sops[0, 0]) if len(sops) else end - start
            if not bool(torch.isin(ids[:sep], blank_ids).any()):
                forced.append(self.end_token_id)  # no layout (see get_mrope_input_positions): an empty answer
            elif sep < end - start:
                spans.append(PrefillSpan(start, end, sep))
                forced.append(None)
            else:
                forced.append(special.sop_id)
        return spans, forced

    def get_mrope_input_positions(self, input_tokens: list[int], mm_features: list[Any]) -> tuple[torch.Tensor, int]:
        """The prompt's encoded 2D positions (every M-RoPE row the same) and the decode delta (see `layout.py`).
        vLLM's max_model_len defaults to the config's max_position_embeddings, which keeps every position and block
        position inside the position tables."""
        stride = self.settings.max_positions
        try:
            layout = prompt_layout(list(input_tokens), self.settings.layout_tokens, stride)
            positions, delta = layout.positions, layout.delta
        except LayoutError as error:
            logger.warning("GLM request answered with an empty span: %s", error)
            positions, delta = list(range(0, len(input_tokens) * stride, stride)), 0
        rows = torch.tensor(positions, dtype=torch.long).expand(3, -1).clone()
        return rows, delta

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Loads glm-hf's safetensors names (`glm.*`, `lm_head.weight`); the GeGLU up-projection `[value | gate]` goes
        in as the two shards of its merged column-parallel layer."""
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        for name, tensor in weights:
            if name.endswith("rotary.inv_freq") or (name == "lm_head.weight" and self.settings.tie_word_embeddings):
                continue  # computed from the config / shared with the word embeddings
            if name not in params:
                raise ValueError(
                    f"The checkpoint holds {name!r}, which this GLM model has no parameter for; is the folder a "
                    "glm-hf save whose config.json matches its weights?"
                )
            param = params[name]
            loader = getattr(param, "weight_loader", default_weight_loader)
            if self.settings.use_glu and ".mlp.dense_h_to_4h." in name:
                for shard, half in enumerate(tensor.chunk(2, dim=0)):
                    loader(param, half, shard)
            else:
                loader(param, tensor)
            loaded.add(name)
        return loaded


class GLMForCausalLM(GLMForConditionalGeneration):
    """A folder saved from glm-hf's causal head: same weights, served as `glm-hf serve` serves it (prompts are GLM
    generation requests, as for `GLMForConditionalGeneration`)."""


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
