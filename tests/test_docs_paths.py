"""No tutorial, doc or config names an absolute path outside the repository: every path a user
is shown must exist for every user (the repository's own files, the embedded demo data, or a
file the text makes), never a folder of the machine it was written on."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: an absolute path: '/' opening a token (not inside a URL or a relative path), two components
ABSOLUTE = re.compile(r"(?<![\w.~$}\]/:<>-])/(?!/)[A-Za-z0-9_.-]+/[^\s`'\")\],;]*")
#: kernel interfaces and interpreters every Linux machine has (not machine-specific folders)
SYSTEM = ("/proc/", "/dev/", "/sys/", "/bin/", "/usr/bin/")
SUFFIXES = (".md", ".yaml", ".yml", ".json", ".txt", ".rst")


def documentation_files() -> list[Path]:
    """The repository's tutorials, docs, READMEs and configs (PyTC's own configs kept verbatim
    as test data included)."""
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.splitlines()
        files = [ROOT / name for name in listed]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the tree
        files = [p for p in ROOT.rglob("*") if ".git" not in p.parts]
    return sorted(p for p in files if p.suffix in SUFFIXES and p.is_file())


def absolute_paths(text: str) -> list[str]:
    """The absolute paths ``text`` names, kernel interfaces left out."""
    return [m for m in ABSOLUTE.findall(text) if not m.startswith(SYSTEM)]


def test_the_pattern_finds_machine_paths_and_nothing_else():
    text = ("--image /work/shared/data/x/image.h5 \\\n    --label '/home/me/label.h5'\n"
            "see https://example.org/a/b and datasets/drosophila_vnc_mito/train.h5, 1/255, "
            "`/proc/<pid>/smaps`, #!/bin/bash, ~/x/y, $HOME/a/b, C:/x, (/Users/me/data/v.h5)")
    assert absolute_paths(text) == ["/work/shared/data/x/image.h5", "/home/me/label.h5",
                                    "/Users/me/data/v.h5"]


def test_the_files_scanned_include_every_tutorial_and_config():
    names = {p.relative_to(ROOT).as_posix() for p in documentation_files()}
    assert {"README.md", "tutorials/augmentations.md", "docs/config_reference.md",
            "configs/mito.yaml"} <= names
    assert all(p.relative_to(ROOT).as_posix() in names for p in (ROOT / "tutorials").glob("*.md"))


@pytest.mark.parametrize("path", documentation_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_absolute_path_outside_the_repository(path: Path):
    found = absolute_paths(path.read_text(encoding="utf-8", errors="replace"))
    assert not found, f"{path.relative_to(ROOT)} names absolute paths {found}; use a path inside " \
                      "the repository (the demo data under datasets/) or one the text creates"
