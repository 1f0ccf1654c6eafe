"""Model cards for GLM folders, filled from the package's template (`assets/model_card_template.md`).

A folder's card is built from its `config.json` (which GLM variant, how big, which dtype or quantization) and from
`card_info.json`, which training runs, the demo and the converter write: title, training procedure, evaluation,
datasets, metrics, license. `glm-hf card MODEL_DIR` (re)writes `README.md` from those files.
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from .folder_writes import write_text_atomic
from .model.configuration_glm import GLMConfig

TEMPLATE = Path(__file__).parent / "assets" / "model_card_template.md"
CARD_INFO_FILE = "card_info.json"
LOG_HISTORY_FILE = "log_history.json"
DEFAULT_LIMITATIONS = (
    "GLM generates text by filling blanks; it reproduces patterns and errors of its training data and is not a "
    "source of facts. Check its outputs before relying on them."
)


@dataclass
class CardInfo:
    """What a run knows about the model it produced; everything else comes from the config."""

    title: str = "A GLM model"
    training: str = ""
    evaluation: str = ""
    intended_use: str = (
        "Blank infilling (`fill-blank` pipeline), left-to-right generation after `[gMASK]`, cloze-style "
        "classification and multiple choice, and fine-tuning for those tasks with the stock `Trainer`."
    )
    limitations: str = DEFAULT_LIMITATIONS
    license: str = "apache-2.0"
    datasets: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    base_model: str | None = None
    example: str = "The capital of France is [MASK]."


def variant_description(config: GLMConfig) -> str:
    """One paragraph naming the GLM family member that the config's switches describe."""
    if config.position_encoding == "learned_2d":
        family = "GLM (Du et al., 2022): learned 2D positions (position and block-position tables), pre-LN"
    elif config.layernorm_style == "post_alpha":
        family = "a ChatGLM-6B-style GLM: 2D rotary positions, post-LN residuals scaled by alpha"
    elif config.layernorm_style == "deepnorm":
        family = "a GLM-130B-style GLM: 2D rotary positions, DeepNorm"
    else:
        family = "a GLM with 2D rotary positions and pre-LN"
    extras = [
        name for name, on in (("GeGLU", config.use_glu), ("tied output layer", config.tie_word_embeddings)) if on
    ]
    return (
        f"This is {family}{', ' + ', '.join(extras) if extras else ''}. GLM is pretrained by autoregressive blank "
        "infilling: spans of the text become `[MASK]`/`[sMASK]`/`[gMASK]` blanks (Part A, read bidirectionally) and "
        "are generated back one after another (Part B, left to right)."
    )


def size_description(config: GLMConfig, parameters: int | None) -> str:
    counted = f"{parameters:,} parameters: " if parameters else ""
    return (
        f"{counted}{config.num_hidden_layers} layers, hidden size {config.hidden_size}, "
        f"{config.num_attention_heads} heads, feed-forward {config.intermediate_size}, vocabulary "
        f"{config.vocab_size:,}, positions `{config.position_encoding}` (up to {config.max_position_embeddings})."
    )


def quantization_description(config: GLMConfig) -> str:
    quantization = getattr(config, "quantization_config", None)
    if quantization:
        details = quantization if isinstance(quantization, dict) else quantization.to_dict()
        return f"Weight-only quantized: `{json.dumps(details, sort_keys=True)}`."
    dtype = getattr(config, "dtype", None) or "float32"
    return f"Not quantized; weights stored in `{str(dtype).removeprefix('torch.')}`."


def build_model_card(
    config: GLMConfig, info: CardInfo, parameters: int | None = None, repo: str = "path/to/this/folder"
) -> ModelCard:
    """The filled template: Hub metadata (library, pipeline tag, tags, license, datasets, metrics) and sections."""
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["glm", "glm-hf", "blank-infilling"],
        license=info.license,
        datasets=info.datasets or None,
        metrics=info.metrics or None,
        base_model=info.base_model,
    )
    return ModelCard.from_template(
        data,
        template_path=str(TEMPLATE),
        title=info.title,
        variant=variant_description(config),
        size=size_description(config, parameters),
        intended_use=info.intended_use,
        repo=repo,
        example=info.example,
        training=info.training or "Not recorded.",
        evaluation=info.evaluation or "No evaluation recorded.",
        quantization=quantization_description(config),
        limitations=info.limitations,
    )


def read_card_info(folder: str | Path) -> CardInfo:
    """The folder's `card_info.json`, or the defaults when it has none."""
    info_file = Path(folder) / CARD_INFO_FILE
    if not info_file.is_file():
        return CardInfo()
    try:
        fields = json.loads(info_file.read_text(encoding="utf-8"))
        return CardInfo(**fields)
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as error:
        raise ValueError(
            f"{info_file} is damaged ({error}); it must be a JSON object with the fields of CardInfo "
            f"({', '.join(CardInfo.__dataclass_fields__)}). Fix it or delete it to start from the defaults."
        ) from error


def write_model_card(
    folder: str | Path, info: CardInfo | None = None, parameters: int | None = None, save_info: bool = True
) -> Path:
    """Writes `README.md` (and, with `save_info`, `card_info.json`) for a saved GLM folder. Without `info`, the
    folder's `card_info.json` is used; a missing training section is filled from `log_history.json` if present."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json; point to a saved GLM model folder.")
    config = GLMConfig.from_pretrained(folder)
    if info is None:
        info = read_card_info(folder)
    if not info.training and (folder / LOG_HISTORY_FILE).is_file():
        info.training = _training_from_log(_read_log_history(folder / LOG_HISTORY_FILE))
    if save_info:
        write_text_atomic(folder / CARD_INFO_FILE, json.dumps(asdict(info), indent=1, ensure_ascii=False))
    write_text_atomic(folder / "README.md", str(build_model_card(config, info, parameters)))
    return folder / "README.md"


def _read_log_history(path: Path) -> list[dict]:
    """The Trainer log history saved at `path` (`trainer.state.log_history`), checked: a JSON list of objects, each
    entry with a `loss` also holding a numeric loss and the integer `step` it was logged at. A ValueError names the
    file and, for a bad entry, its index and key, so the card is never built from a half-read log."""
    fix = "fix it, or delete it to leave the card's training section unrecorded."
    try:
        history = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is damaged (not valid JSON: {error}); {fix}") from error
    if not isinstance(history, list) or not all(isinstance(entry, dict) for entry in history):
        raise ValueError(
            f'{path} must be a JSON list of log entries (objects such as {{"loss": 2.5, "step": 20}}); {fix}'
        )
    for index, entry in enumerate(history):
        if "loss" not in entry:
            continue
        if "step" not in entry:
            raise ValueError(f"{path}: entry {index} has a loss but no 'step' key (the step it was logged at); {fix}")
        for key, kind, expected in (("loss", (int, float), "a number"), ("step", int, "an integer")):
            if isinstance(entry[key], bool) or not isinstance(entry[key], kind):
                raise ValueError(f"{path}: entry {index} has {key}={entry[key]!r}, which must be {expected}; {fix}")
    return history


def _training_from_log(log_history: list[dict]) -> str:
    losses = [entry for entry in log_history if "loss" in entry]
    if not losses:
        return "Not recorded."
    return (
        f"Trained for {losses[-1]['step']} steps with the stock `Trainer`; training loss {losses[0]['loss']:.3f} "
        f"at step {losses[0]['step']}, {losses[-1]['loss']:.3f} at step {losses[-1]['step']}."
    )


__all__ = ["CardInfo", "build_model_card", "read_card_info", "variant_description", "write_model_card"]
