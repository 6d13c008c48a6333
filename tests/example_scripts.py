"""The example scripts as modules, for tests that call a script's `main(argv)` in-process or patch what it uses.

examples/ is not a package and nothing puts it on sys.path: each script is loaded from its file, as
`python examples/NAME.py` runs it, importing only the installed packages.
"""

import importlib.util
import sys
from pathlib import Path


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str):
    """examples/`name`.py as a fresh module called `name` (patches on it do not leak into other tests' copies)."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # typing.get_type_hints (HfArgumentParser) looks the dataclasses' module up there
    spec.loader.exec_module(module)
    return module
