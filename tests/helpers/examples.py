"""Imports the example scripts (`examples/*.py`, `examples/distributed/*.py`) as modules, without putting their
folders on `sys.path`."""

import importlib.util
import sys
from types import ModuleType

from tests.helpers.paths import EXAMPLES


def load_example(relative: str) -> ModuleType:
    """Imports `examples/<relative>` as the module named after its file, registered in `sys.modules` as `import`
    would (and reused when already loaded). An example that imports a sibling by name (`from finetune_seq2seq
    import ...`) finds it there, so load that sibling first."""
    path = EXAMPLES / relative
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) == str(path):
        return loaded
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
