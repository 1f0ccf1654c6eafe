"""Hub plumbing of GLM models: saving with the code and a model card, `push_to_hub`, and loading.

Kept apart from `modeling_glm.py` (the network and its heads); saved folders carry this file too, since the model
classes inherit `GLMHubMixin`. What only the installed glm_hf package can do (write the filled model card, convert
a THUDM folder) is handed in by `import glm_hf` through `GLMHubMixin.package_services`; a saved folder's copy of
this code, run with `trust_remote_code=True` without glm_hf, has none and says so where it matters.
"""

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from huggingface_hub import CommitOperationAdd, HfApi, ModelCard
from huggingface_hub.errors import EntryNotFoundError
from safetensors import SafetensorError, safe_open

from .quantization import refuse_ignored_quantization


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def thudm_kind(config: dict) -> str | None:
    """`"thudm_glm"` (THUDM's GLM: `model_type="glm"` with block positions) or `"chatglm"` (ChatGLM-6B) for a
    THUDM checkpoint's `config.json` contents; None for anything else."""
    model_type = config.get("model_type")
    if model_type == "chatglm":
        return "chatglm"
    if model_type == "glm" and "block_position_encoding" in config:
        return "thudm_glm"
    return None


def _thudm_folder(path) -> bool:
    """Whether `path` is a local folder holding a THUDM GLM or ChatGLM-6B checkpoint rather than a glm-hf one."""
    config_file = os.path.join(str(path), "config.json")
    if not os.path.isfile(config_file):
        return False
    try:
        with open(config_file, encoding="utf-8") as handle:
            config = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _loading_error(str(path), error) from error
    return thudm_kind(config) is not None


def _looks_like_a_path(name: str) -> bool:
    """Whether `name` can only be a local path (a Hub repo id is `name` or `namespace/name`)."""
    return os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name


def _damaged_weight_files(folder: str) -> list[str]:
    """The safetensors files in `folder` that cannot be opened (truncated, empty or not safetensors)."""
    damaged = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            try:
                with safe_open(os.path.join(folder, name), framework="pt") as weights:
                    for key in weights.keys():
                        weights.get_slice(key)
            except (SafetensorError, OSError):
                damaged.append(name)
    return damaged


def _loading_error(path: str, error: Exception) -> OSError:
    """A clear error for a folder whose files are damaged: which file, and what to do."""
    if isinstance(error, UnicodeDecodeError | json.JSONDecodeError):
        return OSError(
            f"{os.path.join(path, 'config.json')} is damaged (not valid JSON: {error}); download or save "
            "the model again."
        )
    damaged = _damaged_weight_files(path) if os.path.isdir(path) else []
    names = ", ".join(os.path.join(path, name) for name in damaged) or f"a weights file of {path}"
    return OSError(
        f"{names} is damaged ({error}): truncated, empty or not a safetensors file; download or save the model again."
    )


def _saving_error(folder: str, error: SafetensorError) -> OSError:
    """A clear error for weights safetensors could not write (its own message names no file): which file is in the
    way, and what to do. The file is the first weight file in `folder` that is a directory or cannot be written
    (read-only, or immutable even for root); the folder itself when none is."""
    weight_files = sorted(Path(folder).glob("*.safetensors"))
    blocked = next((path for path in weight_files if path.is_dir() or not os.access(path, os.W_OK)), None)
    if blocked is None:
        return OSError(
            f"could not write the model weights into {folder} ({error}); check that the folder is writable and has "
            "free space, or save into another folder."
        )
    if blocked.is_dir():
        problem, fix = "is a directory", "remove or rename that directory"
    else:
        problem, fix = "cannot be replaced", "make it writable (chmod u+w; chattr -i if `lsattr` shows it immutable)"
    return OSError(
        f"could not write the model weights: {blocked} {problem} ({error}); {fix}, or save into another folder."
    )


@dataclass
class PackageServices:
    """What the installed glm_hf package adds to saving and loading (set by `import glm_hf`).

    `write_model_card(folder, parameters)` writes a filled model card; `convert_thudm(source, destination)`
    converts a THUDM GLM / ChatGLM-6B folder into a glm-hf one and returns its path."""

    write_model_card: Callable[[str, int], None] | None = None
    convert_thudm: Callable[[str, str], str] | None = None


class GLMHubMixin:
    """`save_pretrained`, `push_to_hub` and `from_pretrained` for GLM's `PreTrainedModel`s (put before
    `PreTrainedModel` in the bases). `remote_code_auto_map` names the class each Auto class loads from a saved
    folder with `trust_remote_code=True`."""

    remote_code_auto_map: ClassVar[dict[str, str]] = {}
    package_services: ClassVar[PackageServices] = PackageServices()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Saves weights and config plus the model code (every module beside this file: `glm_hf/model/`, or a
        saved folder's copy of it) with an `auto_map` for every GLM head, so
        `AutoModel*.from_pretrained(folder, trust_remote_code=True)` works without glm_hf; with glm_hf installed,
        also a filled model card `README.md` unless the folder already has one."""
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **self.remote_code_auto_map}
        try:
            result = super().save_pretrained(save_directory, *args, **kwargs)
        except SafetensorError as error:
            raise _saving_error(str(save_directory), error) from error
        if not kwargs.get("is_main_process", True):
            return result
        for module in sorted(Path(__file__).parent.glob("*.py")):
            if module.name != "__init__.py":
                shutil.copyfile(module, Path(save_directory) / module.name)
        readme = os.path.join(str(save_directory), "README.md")
        write_model_card = self.package_services.write_model_card
        if write_model_card is not None and not os.path.exists(readme):
            write_model_card(str(save_directory), self.num_parameters())
        return result

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str | None = "50GB",
        tags: list[str] | None = None,
    ) -> str:
        """`PushToHubMixin.push_to_hub`, uploading the filled GLM model card that `save_pretrained` writes; a card
        already in the repo is kept (with `tags` added), as transformers does."""
        repo_id = HfApi().create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, max_shard_size=max_shard_size)
            readme = os.path.join(folder, "README.md")
            try:
                card = ModelCard.load(repo_id, token=token)
            except EntryNotFoundError:
                card = ModelCard(_read_text(readme) if os.path.exists(readme) else "")
            card.data.tags = sorted({*(card.data.tags or []), *(tags or [])}) or None
            card.save(readme)
            operations = [
                CommitOperationAdd(path_in_repo=name, path_or_fileobj=os.path.join(folder, name))
                for name in sorted(os.listdir(folder))
            ]
            return HfApi(token=token).create_commit(
                repo_id=repo_id,
                operations=operations,
                commit_message=commit_message or "Upload model",
                commit_description=commit_description,
                revision=revision,
                create_pr=create_pr,
            )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Loads a glm-hf checkpoint; a local THUDM GLM or ChatGLM-6B folder is converted on the fly into a
        temporary folder first (for large checkpoints, convert once with `glm-hf convert` instead). Refuses a
        `quantization_config` that transformers would ignore for an already-quantized folder."""
        if _thudm_folder(pretrained_model_name_or_path):
            convert_thudm = cls.package_services.convert_thudm
            if convert_thudm is None:  # this code runs from a saved folder, without the glm_hf package
                raise ImportError(
                    f"{pretrained_model_name_or_path} is a THUDM checkpoint; loading it needs the glm-hf package "
                    "(pip install glm-hf, then `import glm_hf` first) or a folder converted with `glm-hf convert`."
                )
            with tempfile.TemporaryDirectory() as scratch:
                converted = convert_thudm(str(pretrained_model_name_or_path), os.path.join(scratch, "converted"))
                return cls.from_pretrained(converted, *args, **kwargs)
        path = str(pretrained_model_name_or_path)
        if _looks_like_a_path(path) and not os.path.exists(os.path.expanduser(path)):
            raise OSError(
                f"{path} does not exist; give the folder of a saved model or a Hub repo id (namespace/name)."
            )
        try:
            loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except (SafetensorError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise _loading_error(path, error) from error
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        refuse_ignored_quantization(model, kwargs.get("quantization_config"))
        return loaded


__all__ = ["GLMHubMixin", "PackageServices", "thudm_kind"]
