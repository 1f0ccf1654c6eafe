"""Runs a `glm-hf` command and SIGKILLs it at a chosen moment, for the tests of atomic writes.

`python -m tests.helpers.kill_at EVENT NEEDLE COUNT [--no-exchange] -- ARGS...`, run from the repository root
(or with it on PYTHONPATH), kills the process (a real SIGKILL: no cleanup runs) when the COUNT-th Python audit event
named EVENT whose arguments mention NEEDLE is raised, e.g. the first `open` of a file in the staging folder, or the
lookup of `renameat2` just before the swap. `--no-exchange` makes the folder swap take its portable two-rename path,
as on systems without renameat2.
"""

import os
import signal
import sys


def kill_at(event: str, needle: str, count: int) -> None:
    seen = 0

    def hook(name: str, arguments: tuple) -> None:
        nonlocal seen
        if name == event and needle in repr(arguments):
            seen += 1
            if seen == count:
                os.kill(os.getpid(), signal.SIGKILL)

    sys.addaudithook(hook)


if __name__ == "__main__":
    separator = sys.argv.index("--")
    event, needle, count, *options = sys.argv[1:separator]
    if "--no-exchange" in options:
        from glm_hf import folder_writes

        folder_writes._exchange = lambda first, second: False
    from glm_hf.cli import main

    kill_at(event, needle, int(count))
    main(sys.argv[separator + 1 :])
