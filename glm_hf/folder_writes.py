"""Writing output folders so that no crash or kill leaves a half-written one, and no command deletes its own input.

Every `glm-hf` command that writes a folder (convert, quantize, pretrain, demo, tokenizer train) writes into a
staging folder beside the destination and swaps it in at the end: with one atomic `renameat2(RENAME_EXCHANGE)` on
Linux, elsewhere with two renames whose in-between state the next run repairs. A kill at any moment therefore leaves
the old destination (or none) or the complete new one, plus at most a staging folder that the next write to the same
destination removes. Files such as a model card are replaced the same way, through a temporary file and a rename.
Staging folders, backups and temporary files are named `.NAME.glm-hf-PID-XXXX.staging` / `.old` / `.tmp`, so one is
only treated as stale when the process that made it is gone.
"""

import ctypes
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


class FolderWriteError(ValueError):
    """The destination cannot be written as asked (it is the source, a file, or a non-empty folder)."""


def check_destination(
    destination: str | os.PathLike, sources: Iterable[str | os.PathLike] = (), overwrite: bool = False
) -> Path:
    """The resolved destination, after refusing one that is, contains or lies inside a source, is a file, or is a
    non-empty folder without `overwrite`. Call it before long work, so a bad destination fails fast."""
    target = Path(destination).resolve()
    for source in sources:
        origin = Path(source).resolve()
        if target == origin or target in origin.parents or origin in target.parents:
            relation = "is" if target == origin else "contains" if target in origin.parents else "lies inside"
            raise FolderWriteError(
                f"the destination {destination} {relation} the source {source}; writing it would destroy the "
                "source. Choose a separate destination folder."
            )
    if target.exists() and not target.is_dir():
        raise FolderWriteError(f"the destination {destination} is a file, not a folder; choose a folder path.")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise FolderWriteError(
            f"the destination {destination} exists and is not empty; choose another folder or pass --overwrite "
            "(overwrite=True) to replace it."
        )
    return target


@contextmanager
def staged_folder(
    destination: str | os.PathLike, sources: Iterable[str | os.PathLike] = (), overwrite: bool = False
) -> Iterator[Path]:
    """Yields an empty staging folder beside `destination`; when the block finishes without an exception, the
    staging folder replaces `destination` atomically. On an exception the destination is left as it was."""
    target = check_destination(destination, sources, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_leftovers(target)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.glm-hf-{os.getpid()}-", suffix=".staging", dir=target.parent)
    )
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700 folders; the result should read like any other
    try:
        yield staging
        _swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # after the swap, this holds the replaced destination


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes `text` (UTF-8) to `path` through a temporary file in the same folder and a rename, so a reader or a
    kill never sees a half-written file."""
    path = Path(path)
    remove_stale_leftovers(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.glm-hf-{os.getpid()}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as file:
            file.write(text)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def remove_stale_leftovers(target: Path) -> None:
    """Removes the staging folders and temporary files for `target` that killed processes left behind; a backup
    left between the two renames of the portable swap is put back when `target` is missing."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.glm-hf-(\d+)-\w+\.(staging|old|tmp)")
    for entry in target.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match is None or _alive(int(match.group(1))):
            continue
        if match.group(2) == "old" and not target.exists():
            entry.rename(target)
        elif entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _swap_in(staging: Path, target: Path) -> None:
    """Puts `staging` at `target`; the replaced folder, if any, ends up at `staging`."""
    if not target.exists():
        staging.rename(target)
    elif not _exchange(staging, target):
        backup = staging.with_suffix(".old")
        target.rename(backup)
        staging.rename(target)
        backup.rename(staging)


def _exchange(first: Path, second: Path) -> bool:
    """Atomically swaps two paths with Linux's renameat2(RENAME_EXCHANGE); False where that is unavailable."""
    function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if function is None:
        return False
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if function(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the file system or kernel cannot exchange
        return False
    raise OSError(error, os.strerror(error), str(second))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


__all__ = ["FolderWriteError", "check_destination", "remove_stale_leftovers", "staged_folder", "write_text_atomic"]
