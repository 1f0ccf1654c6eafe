"""The `glm-hf` command line."""

import argparse
import codecs
import json
import os
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

from huggingface_hub.errors import StrictDataclassError

from .chat_templates import ensure_chat_template
from .demo.run import DemoSettings
from .folder_writes import check_destination, staged_folder
from .model.configuration_glm import GLMConfig
from .model.tokenization_glm import GLMTokenizer


class UserError(ValueError):
    """Bad input to a command; `main` prints it as one line."""


def check_text_files(paths: list[str]) -> None:
    """Refuses missing files and files that are not UTF-8 text (read in chunks, so large corpora cost no memory)."""
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise UserError(f"no such file: {', '.join(missing)}")
    for path in paths:
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = 0
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as error:
                    raise UserError(
                        f"{path} is not UTF-8 text (undecodable byte at offset {offset + error.start}); "
                        "give plain text files."
                    ) from error
                offset += len(chunk)
        if not decoder.decode(b"", final=True) and offset == 0:
            raise UserError(f"{path} is empty; give files with text in them.")


def read_lines(paths: list[str]) -> Iterator[str]:
    """Non-empty lines of UTF-8 text files, streamed."""
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            yield from (line.rstrip("\n") for line in handle if line.strip())


def run_tokenizer_train(args: argparse.Namespace) -> None:
    """Trains a byte-level BPE GLM tokenizer on text files and saves it."""
    check_text_files(args.files)
    check_destination(args.output, args.files, args.overwrite)
    tokenizer = GLMTokenizer.train_bpe(read_lines(args.files), vocab_size=args.vocab_size, show_progress=True)
    ensure_chat_template(tokenizer)
    with staged_folder(args.output, args.files, args.overwrite) as staging:
        tokenizer.save_pretrained(staging)
    print(f"trained a {len(tokenizer):,}-token GLM tokenizer; saved to {args.output}")


def _require_plotting(command: str) -> None:
    """Refuses, before any training, a run whose loss curve could not be drawn (matplotlib is an extra)."""
    try:
        import matplotlib  # noqa: F401  (only whether it imports matters here)
    except ImportError as error:
        raise SystemExit(
            f"glm-hf {command} draws loss_curve.png with matplotlib, which is not installed: "
            "pip install 'glm-hf[demo]'"
        ) from error


def run_demo_command(args: argparse.Namespace) -> None:
    """Pretrains the demo GLM on the embedded corpus, reports held-out blank filling and saves everything."""
    from .demo.run import DemoEvaluationError, run_demo

    _require_plotting("demo")
    settings = DemoSettings(
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads,
        full_corpus=args.full_corpus,
        seed=args.seed,
    )
    started = time.perf_counter()
    try:
        result = run_demo(args.output, settings, overwrite=args.overwrite)
    except DemoEvaluationError as error:
        raise SystemExit(f"glm-hf demo: {error}") from error
    print(
        f"\ntrained and evaluated in {time.perf_counter() - started:.0f}s; final training loss {result.final_loss:.3f}"
    )
    print("\nheld-out blanks (never in the training text):")
    for text, answer, fill in result.examples[: args.show]:
        mark = "ok" if fill == answer else f"expected {answer!r}"
        print(f"  {text}  ->  {fill!r}  ({mark})")
    print("\n[gMASK] generation:")
    for prompt, fill in result.generations:
        print(f"  {prompt}  ->  {fill!r}")
    print("\nheld-out exact match by kind:")
    for group, (hits, total) in result.per_kind.items():
        print(f"  {group:<22} {hits:>3}/{total}")
    print(f"held-out exact match {result.exact_match:.3f}  (frequency baseline {result.baseline:.3f})")
    print(f"saved model, tokenizer, loss_curve.png and README.md (model card) to {args.output}")


def load_texts(args: argparse.Namespace):
    """The `pretrain` texts: local text files (one document per line), JSON/JSONL files, or a `datasets` dataset
    (a `save_to_disk` folder, a folder `load_dataset` reads, or a name in the Hub cache)."""
    from datasets import load_dataset, load_from_disk

    if args.dataset:
        if os.path.isfile(os.path.join(args.dataset, "dataset_dict.json")) or os.path.isfile(
            os.path.join(args.dataset, "state.json")
        ):
            return _saved_split(load_from_disk(args.dataset), args.split)
        return load_dataset(args.dataset, args.dataset_config, split=args.split)
    check_text_files(args.train_file)
    kinds = {"json" if path.endswith((".json", ".jsonl")) else "text" for path in args.train_file}
    if len(kinds) > 1:
        raise UserError("give either text files or JSON/JSONL files, not both.")
    for path in args.train_file if kinds == {"json"} else ():
        if _only_whitespace(path):
            raise UserError(
                f"{path} holds no documents (only whitespace); give JSON Lines with one object per line, such as "
                '{"text": "..."}, or leave the file out.'
            )
    return load_dataset(kinds.pop(), data_files=args.train_file, split="train")


def _only_whitespace(path: str) -> bool:
    """Whether the file holds nothing but JSON whitespace (read in chunks): `datasets` finds no rows in it and says
    only that the split "corresponds to no data", naming no file."""
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            if chunk.strip(b" \t\r\n"):
                return False
    return True


def _saved_split(saved, split: str):
    """A split of a `save_to_disk` folder (a DatasetDict), or the dataset itself when it was saved alone."""
    if not hasattr(saved, "keys"):
        return saved
    if split not in saved:
        raise SystemExit(f"glm-hf pretrain: the saved dataset has no split {split!r} (splits: {list(saved)}).")
    return saved[split]


def run_pretrain(args: argparse.Namespace) -> None:
    """Pretrains a GLM from scratch on the user's texts and saves model, tokenizer, loss curve and model card."""
    from .training.pretraining import pretrain, save_run_artifacts

    _require_plotting("pretrain")
    sources = [path for path in (args.dataset, args.tokenizer, *(args.train_file or ())) if path]
    check_destination(args.output, sources, args.overwrite)
    if args.tokenizer and not Path(args.tokenizer, "tokenizer_config.json").is_file():
        raise UserError(f"--tokenizer {args.tokenizer} is not a saved tokenizer folder (no tokenizer_config.json).")
    texts = load_texts(args)
    if args.text_column not in texts.column_names:
        raise UserError(
            f"the data has no column {args.text_column!r} (columns: {texts.column_names}); pass --text-column."
        )
    if len(texts) == 0:
        raise UserError("the training data has no rows; give texts to pretrain on.")
    if args.tokenizer:
        tokenizer = GLMTokenizer.from_pretrained(args.tokenizer)
    else:
        tokenizer = GLMTokenizer.train_bpe(texts[args.text_column], vocab_size=args.vocab_size)
    config = GLMConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads,
        max_position_embeddings=2 * args.row_length,
        position_encoding=args.position_encoding,
        **tokenizer_special_ids(tokenizer),
    )
    trainer = pretrain(
        texts,
        tokenizer,
        config,
        args.output,
        text_column=args.text_column,
        row_length=args.row_length,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        objective_probs=tuple(args.objective_probs),
        mask_ratio=args.mask_ratio,
    )
    if not trainer.is_world_process_zero():
        trainer.save_model(args.output)  # takes part in gathering sharded (FSDP) weights; only the main one writes
        return
    with staged_folder(args.output, sources, args.overwrite) as staging:
        trainer.save_model(staging)
        ensure_chat_template(tokenizer).save_pretrained(staging)
        save_run_artifacts(
            staging, trainer.state.log_history, _pretrain_card(args, trainer), trainer.model.num_parameters()
        )
    print(f"saved model, tokenizer, loss_curve.png and README.md (model card) to {args.output}")


def _pretrain_card(args: argparse.Namespace, trainer):
    """The model card facts of a `pretrain` run: its options and losses."""
    from .model_card import CardInfo

    options = {name: value for name, value in vars(args).items() if name != "handler"}
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return CardInfo(
        title="A GLM pretrained with glm-hf",
        training=(
            f"Pretrained from scratch with `glm-hf pretrain` (blank infilling, stock `Trainer`), options "
            f"`{json.dumps(options, default=str)}`. Final training loss {losses[-1]:.3f}; curve in `loss_curve.png`."
        ),
        datasets=[args.dataset] if args.dataset else [],
    )


def tokenizer_special_ids(tokenizer: GLMTokenizer) -> dict[str, int]:
    """The special token ids a GLMConfig needs, read from the tokenizer."""
    names = ("pad", "eos", "mask", "smask", "gmask", "sop", "eop")
    return {f"{name}_token_id": getattr(tokenizer, f"{name}_token_id") for name in names}


def run_convert(args: argparse.Namespace) -> None:
    """Converts a THUDM GLM / ChatGLM-6B checkpoint folder into a glm-hf folder."""
    import torch

    from .convert.checkpoint import CheckpointError, convert_checkpoint

    dtype = None if args.dtype == "keep" else getattr(torch, args.dtype)
    try:
        destination = convert_checkpoint(
            args.source,
            args.destination,
            dtype=dtype,
            require_tokenizer=not args.no_tokenizer,
            overwrite=args.overwrite,
            progress=print,
        )
    except CheckpointError as error:
        raise SystemExit(f"glm-hf convert: {error}") from error
    print(f"converted {args.source} -> {destination}")


def run_card(args: argparse.Namespace) -> None:
    """(Re)writes a model folder's README.md from its config, card_info.json and log_history.json."""
    from .model_card import read_card_info, write_model_card

    folder = Path(args.model_dir)
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder} has no config.json; point to a saved GLM model folder.")
    info = read_card_info(folder)
    for name in ("title", "license"):
        if getattr(args, name) is not None:
            setattr(info, name, getattr(args, name))
    if args.dataset:
        info.datasets = args.dataset
    print(f"wrote {write_model_card(folder, info)}")


def refuse_quantized_source(source: Path) -> None:
    """Refuses a folder that is already quantized, for every bit width: loading it with its own format keeps its
    integer codes, so "quantizing" it again would only copy it under a new title (and another format would round
    codes again)."""
    config_file = source / "config.json"
    try:
        saved = json.loads(config_file.read_text(encoding="utf-8")).get("quantization_config")
    except (ValueError, AttributeError) as error:
        raise UserError(f"{config_file} is not a JSON config ({error}); save the model again.") from error
    if saved is not None:
        raise UserError(
            f"{source} is already quantized ({_quantization_name(saved)}), so it cannot be quantized again; quantize "
            "the original full-precision folder instead."
        )


def _quantization_name(saved: object) -> str:
    """A saved `quantization_config` in words: GLM's own by its spec ("int8 absmax, per row"), another by method."""
    from .model.quantization import QUANT_METHOD, GLMQuantizationConfig

    if not isinstance(saved, dict) or saved.get("quant_method") != QUANT_METHOD:
        return str(saved.get("quant_method", saved) if isinstance(saved, dict) else saved)
    try:
        return GLMQuantizationConfig.from_dict(saved).spec.describe()
    except ValueError:
        return QUANT_METHOD


def run_quantize(args: argparse.Namespace) -> None:
    """Loads a GLM folder quantizing its linear layers, then saves the quantized model, tokenizer and card."""
    from .model.modeling_glm import GLMForConditionalGeneration
    from .model.quantization import GLMQuantizationConfig
    from .model_card import read_card_info, write_model_card

    source, destination = Path(args.source), Path(args.destination)
    if not (source / "config.json").is_file():
        raise UserError(f"{source} has no config.json; point to a saved GLM folder.")
    refuse_quantized_source(source)
    check_destination(destination, [source], args.overwrite)
    config = GLMQuantizationConfig(
        bits=args.bits, method=args.method, group_size=args.group_size, activations=args.activations
    )
    model = GLMForConditionalGeneration.from_pretrained(source, quantization_config=config)
    info = read_card_info(source)
    info.title = f"{info.title} (int{args.bits} {args.method})"
    info.base_model = str(source)
    with staged_folder(destination, [source], args.overwrite) as staging:
        model.save_pretrained(staging)
        if (source / "tokenizer_config.json").is_file():
            GLMTokenizer.from_pretrained(source).save_pretrained(staging)
        write_model_card(staging, info, model.num_parameters())
    print(f"quantized {source} -> {destination} (int{args.bits} {args.method}, group size {args.group_size})")


# Weights as `save_pretrained` writes them (one file, or shards with an index).
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def check_servable_folder(folder: Path) -> None:
    """Refuses, before anything loads, a model folder without weights or without a GLM tokenizer (`tokenizer.json`);
    otherwise transformers would fail later with messages about sentencepiece or missing files."""
    missing = []
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append(f"weights ({' or '.join(WEIGHT_FILES[:2])})")
    if not (folder / "tokenizer.json").is_file():
        missing.append("tokenizer (tokenizer.json)")
    if missing:
        raise UserError(
            f"{folder} has no {' and no '.join(missing)}; serve a folder saved with model.save_pretrained and "
            "tokenizer.save_pretrained (or made by glm-hf convert / demo)."
        )


def run_serve(args: argparse.Namespace) -> None:
    """Serves a GLM folder over an OpenAI-compatible HTTP API (see glm_hf.serving.app)."""
    model_dir = args.model_dir
    if model_dir is None:
        if not Path("glm-demo", "config.json").is_file():
            raise SystemExit("glm-hf serve: no MODEL_DIR given and no ./glm-demo here; run `glm-hf demo` first.")
        model_dir = "glm-demo"
    if not Path(model_dir, "config.json").is_file():
        raise SystemExit(f"glm-hf serve: {model_dir} is not a model folder (it has no config.json).")
    check_servable_folder(Path(model_dir))
    try:
        from .serving.app import ServeSettings, serve
    except ImportError as error:
        raise SystemExit(f"glm-hf serve needs the serve extra: pip install 'glm-hf[serve]' ({error})") from error
    api_key = args.api_key or os.environ.get("GLM_HF_API_KEY")
    settings = ServeSettings(
        model_name=args.model_name or Path(model_dir).resolve().name,
        api_key=api_key,
        max_batch_size=args.max_batch_size,
        max_queue=args.max_queue,
        max_tokens=args.max_tokens,
        max_body_bytes=args.max_body_bytes,
        request_timeout=args.request_timeout,
    )
    serve(model_dir, args.host, args.port, settings, device=args.device, cpu_packing=args.cpu_packing)


def _positive(kind: type):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a positive {kind.__name__}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def _port(text: str) -> int:
    """A TCP port number, 1-65535 (checked by the parser, so a bad one fails before the model loads)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number (1-65535), got {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 1 to 65535, got {port}")
    return port


def _common_options() -> argparse.ArgumentParser:
    """Options every command takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return common


def _overwrite_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a non-empty output folder (swapped in once complete)"
    )


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="glm-hf", description="GLM models for HuggingFace Transformers.", parents=[common]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="pretrain a tiny GLM on the embedded bilingual corpus and evaluate held-out blank filling",
    )
    demo.add_argument("--output", default="glm-demo", help="folder for the model, tokenizer, loss curve and card")
    defaults = DemoSettings()
    demo.add_argument("--max-steps", type=_positive(int), default=defaults.max_steps)
    demo.add_argument("--batch-size", type=_positive(int), default=defaults.batch_size)
    demo.add_argument("--hidden-size", type=_positive(int), default=defaults.hidden_size)
    demo.add_argument("--num-layers", type=_positive(int), default=defaults.num_hidden_layers)
    demo.add_argument("--num-heads", type=_positive(int), default=defaults.num_attention_heads)
    demo.add_argument(
        "--full-corpus",
        action="store_true",
        help="also train on the everyday sentence pairs and the standard library's docstrings",
    )
    demo.add_argument("--show", type=int, default=8, help="held-out fills to print")
    demo.add_argument("--seed", type=int, default=0)
    _overwrite_option(demo)
    demo.set_defaults(handler=run_demo_command)

    pretrain = commands.add_parser("pretrain", parents=[common], help="pretrain a GLM from scratch on your texts")
    source = pretrain.add_mutually_exclusive_group(required=True)
    source.add_argument("--train-file", nargs="+", help="text files (one document per line) or JSON/JSONL files")
    source.add_argument(
        "--dataset", help="a datasets dataset: a save_to_disk folder, a loadable local folder, or a cached Hub name"
    )
    pretrain.add_argument("--dataset-config", help="the dataset's configuration name")
    pretrain.add_argument("--split", default="train")
    pretrain.add_argument("--text-column", default="text")
    pretrain.add_argument("--output", required=True, help="folder for the model, tokenizer, loss curve and card")
    pretrain.add_argument("--tokenizer", help="a saved GLM tokenizer; default: train a byte-level BPE on the texts")
    pretrain.add_argument(
        "--vocab-size", type=_positive(int), default=8000, help="size of the tokenizer trained on the texts"
    )
    pretrain.add_argument("--hidden-size", type=_positive(int), default=256)
    pretrain.add_argument("--num-layers", type=_positive(int), default=4)
    pretrain.add_argument("--num-heads", type=_positive(int), default=4)
    pretrain.add_argument("--position-encoding", choices=("learned_2d", "rotary_2d"), default="learned_2d")
    pretrain.add_argument("--row-length", type=_positive(int), default=256, help="tokens per packed training row")
    pretrain.add_argument("--max-steps", type=_positive(int), default=1000)
    pretrain.add_argument(
        "--batch-size",
        type=_positive(int),
        default=16,
        help="rows per step and process (the global batch is this x processes)",
    )
    pretrain.add_argument("--learning-rate", type=_positive(float), default=1e-3)
    pretrain.add_argument(
        "--objective-probs", type=float, nargs=3, default=(0.6, 0.2, 0.2), metavar=("TOKEN", "SENTENCE", "DOCUMENT")
    )
    pretrain.add_argument("--mask-ratio", type=float, default=0.15)
    pretrain.add_argument("--seed", type=int, default=0)
    _overwrite_option(pretrain)
    pretrain.set_defaults(handler=run_pretrain)

    convert = commands.add_parser(
        "convert", parents=[common], help="convert a THUDM GLM or ChatGLM-6B checkpoint folder to glm-hf"
    )
    convert.add_argument("source", help="THUDM checkpoint folder (config.json, weights, vocabulary files)")
    convert.add_argument("destination", help="folder to write (must not exist or be empty, unless --overwrite)")
    convert.add_argument("--dtype", choices=("keep", "float32", "float16", "bfloat16"), default="keep")
    convert.add_argument("--no-tokenizer", action="store_true", help="convert a ChatGLM folder without ice_text.model")
    _overwrite_option(convert)
    convert.set_defaults(handler=run_convert)

    quantize = commands.add_parser("quantize", parents=[common], help="weight-only quantize a saved GLM folder")
    quantize.add_argument("source", help="a saved GLM folder")
    quantize.add_argument("destination", help="folder to write (must not exist or be empty, unless --overwrite)")
    quantize.add_argument("--bits", type=int, choices=(4, 8), default=8)
    quantize.add_argument("--method", choices=("absmax", "zeropoint"), default="absmax")
    quantize.add_argument(
        "--group-size", type=_positive(int), default=None, help="columns per scale (default: one per row)"
    )
    quantize.add_argument(
        "--activations",
        choices=("dynamic_int8",),
        default=None,
        help="int8 activations too: W8A8 with --bits 8, W4A8 with --bits 4 (absmax, per row; fast on CPU)",
    )
    _overwrite_option(quantize)
    quantize.set_defaults(handler=run_quantize)

    card = commands.add_parser(
        "card", parents=[common], help="write a model folder's README.md (model card) from its files"
    )
    card.add_argument("model_dir", help="a saved GLM folder (config.json; card_info.json and log_history.json used)")
    card.add_argument("--title")
    card.add_argument("--license")
    card.add_argument("--dataset", nargs="+", help="Hub ids of the training datasets")
    card.set_defaults(handler=run_card)

    serve = commands.add_parser(
        "serve", parents=[common], help="serve a GLM folder over an OpenAI-compatible HTTP API and a chat page"
    )
    serve.add_argument("model_dir", nargs="?", help="a saved GLM folder (default: ./glm-demo from `glm-hf demo`)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    serve.add_argument("--port", type=_port, default=8000)
    serve.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 (or set GLM_HF_API_KEY)")
    serve.add_argument("--model-name", help="the model id clients send (default: the folder's name)")
    serve.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    serve.add_argument("--max-batch-size", type=_positive(int), default=16, help="requests per shared forward pass")
    serve.add_argument("--max-queue", type=_positive(int), default=64, help="waiting requests before 429")
    serve.add_argument("--max-tokens", type=_positive(int), default=512, help="largest max_tokens a request may ask")
    serve.add_argument("--max-body-bytes", type=_positive(int), default=1_000_000, help="largest request body")
    serve.add_argument(
        "--request-timeout", type=_positive(float), default=600.0, help="seconds a request may wait and run"
    )
    serve.add_argument(
        "--no-cpu-packing",
        dest="cpu_packing",
        action="store_false",
        help="on CPU, serve the linear layers as loaded instead of packed by glm_hf.pack_for_cpu (same tokens)",
    )
    serve.set_defaults(handler=run_serve)

    tokenizer = commands.add_parser("tokenizer", parents=[common], help="tokenizer tools")
    tokenizer_commands = tokenizer.add_subparsers(dest="tokenizer_command", required=True)
    train = tokenizer_commands.add_parser(
        "train", parents=[common], help="train a byte-level BPE GLM tokenizer on text files"
    )
    train.add_argument("files", nargs="+", help="UTF-8 text files, one or more documents per line")
    train.add_argument("--vocab-size", type=_positive(int), default=32000)
    train.add_argument("--output", required=True, help="folder to save the tokenizer to")
    _overwrite_option(train)
    train.set_defaults(handler=run_tokenizer_train)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Runs a command. An error ends it with one line on stderr and exit status 1 (2 for bad arguments, from
    argparse); `--debug` shows the traceback instead."""
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except KeyboardInterrupt:
        raise SystemExit(f"{_command_name(args)}: interrupted") from None
    except Exception as error:
        if args.debug:
            raise
        raise SystemExit(f"{_command_name(args)}: {_describe(error)}") from None


def _command_name(args: argparse.Namespace) -> str:
    return " ".join(["glm-hf", args.command, *([args.tokenizer_command] if args.command == "tokenizer" else [])])


def _describe(error: Exception) -> str:
    """One line for an error: the message of a bad-input error (a config field of the wrong type is one), or the
    error's type, message and where it was raised for anything unexpected."""
    message = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, ValueError | OSError | StrictDataclassError):
        return message
    frame = traceback.extract_tb(error.__traceback__)[-1]
    location = f"{Path(frame.filename).name}:{frame.lineno}"
    return f"unexpected {type(error).__name__} at {location}: {message} (rerun with --debug for the traceback)"


if __name__ == "__main__":
    main()
