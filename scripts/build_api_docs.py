#!/usr/bin/env python
"""Build the browsable HTML API reference with pdoc (``pip install -e ".[docs]"``).

    python scripts/build_api_docs.py            # -> docs/api/index.html
    python scripts/build_api_docs.py -o /tmp/api connectomics_data.loader

Every public module of the package gets a page (pdoc alone would stop at each package's
``__all__``). Docstrings are read as Google style with reST roles. ``connectomics_data.lightning``
is documented when Lightning is installed and skipped with a note otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import pkgutil
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def public_modules(package: str = "connectomics_data") -> list[str]:
    """``package`` and every submodule below it whose name has no part starting with '_'."""
    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        if info.name == f"{package}.lightning" and importlib.util.find_spec("lightning") is None \
                and importlib.util.find_spec("pytorch_lightning") is None:
            print(f"skipped {info.name} (Lightning is not installed)")
            continue
        names.append(info.name)
    return names


def build(output: Path, modules: list[str]) -> None:
    """Render ``modules`` into a fresh ``output`` directory (replaced only once complete)."""
    import pdoc
    import pdoc.render

    pdoc.render.configure(docformat="google", search=True, show_source=False,
                          footer_text="connectomics_data API reference")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        with warnings.catch_warnings():
            # every module is listed explicitly, so pdoc meets subpackages' modules twice
            warnings.filterwarnings("ignore", message="The module specification .* adds a module named")
            pdoc.pdoc(*modules, output_directory=tmp)
        if output.exists():
            shutil.rmtree(output)
        tmp.rename(output)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(ROOT / "docs" / "api"),
                        help="output directory (default: docs/api)")
    parser.add_argument("modules", nargs="*",
                        help="modules to document (default: the whole package)")
    args = parser.parse_args(argv)
    try:
        import pdoc  # noqa: F401
    except ImportError:
        print('error: pdoc is not installed (pip install -e ".[docs]")', file=sys.stderr)
        return 2
    modules = args.modules or public_modules()
    build(Path(args.output), modules)
    print(f"wrote {len(modules)} modules to {Path(args.output) / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
