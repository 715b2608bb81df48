"""PyTC's IMAGE_NAME / INPUT_PATH syntax: lists, '@', globs, .txt lists, per-name directories."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectomics_data.errors import ConfigError, VolumeNotFoundError
from connectomics_data.io import resolve_names, resolve_volume_specs
from connectomics_data.io.names import is_url


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("names")
    for rel in ["img/b.png", "img/a.png", "img/sub/c.png", "img/x.tif", "lab/a.h5", "lab/b.h5"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    (root / "list.txt").write_text("img/a.png\n\n  img/b.png  \n\n")
    (root / "img" / "inner.txt").write_text("a.png\nsub/c.png\n")
    (root / "empty.txt").write_text("\n \n")
    (root / "bad.txt").write_bytes(b"\xff\xfe\x00garbage")
    (root / "dir.txt").mkdir()
    return root


@contextmanager
def cwd(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def test_list_and_at_joined(tree):
    d = str(tree)
    assert resolve_names(["a.h5", "b.h5"], d) == [f"{d}/a.h5", f"{d}/b.h5"]
    assert resolve_names("a.h5@b.h5@c.h5", d) == [f"{d}/a.h5", f"{d}/b.h5", f"{d}/c.h5"]
    assert resolve_names("vol.h5", d) == [f"{d}/vol.h5"]


def test_input_path_one_per_name(tree):
    d = str(tree)
    got = resolve_names("a.h5@b.h5", f"{d}/img@{d}/lab")
    assert got == [f"{d}/img/a.h5", f"{d}/lab/b.h5"]
    with pytest.raises(ConfigError, match=r"INPUT_PATH gives 2 directories .* 3 names"):
        resolve_names("a@b@c", f"{d}/img@{d}/lab", what="IMAGE_NAME")


def test_is_absolute_skips_join(tree):
    assert resolve_names("/x/a.h5@rel/b.h5", "/ignored@/also", is_absolute=True) == [
        "/x/a.h5",
        "rel/b.h5",
    ]


def test_glob_sorted_and_recursive(tree):
    d = str(tree)
    assert resolve_names("img/*.png", d) == [f"{d}/img/a.png", f"{d}/img/b.png"]
    assert resolve_names("img/**/*.png", d) == [
        f"{d}/img/a.png",
        f"{d}/img/b.png",
        f"{d}/img/sub/c.png",
    ]
    assert resolve_names(f"{d}/img/*.tif", None, is_absolute=True) == [f"{d}/img/x.tif"]


def test_glob_kept_as_one_stack_without_load_2d(tree):
    d = str(tree)
    assert resolve_volume_specs("img/*.png@lab/a.h5", d) == [f"{d}/img/*.png", f"{d}/lab/a.h5"]
    assert resolve_volume_specs("img/*.png", d, load_2d=True) == [
        f"{d}/img/a.png",
        f"{d}/img/b.png",
    ]


def test_empty_glob(tree):
    with pytest.raises(VolumeNotFoundError, match=r"no files match the pattern .*\*\.jpg"):
        resolve_names("img/*.jpg", str(tree))


def test_txt_list(tree):
    d = str(tree)
    # The .txt file is found in the input directory; its lines are joined with it too.
    assert resolve_names("list.txt", d) == [f"{d}/img/a.png", f"{d}/img/b.png"]
    with cwd(tree):
        assert resolve_names("list.txt", "/data") == ["/data/img/a.png", "/data/img/b.png"]
        assert resolve_names("list.txt", None, is_absolute=True) == ["img/a.png", "img/b.png"]
    assert resolve_names("inner.txt", f"{d}/img") == [f"{d}/img/a.png", f"{d}/img/sub/c.png"]


def test_txt_errors(tree):
    d = str(tree)
    with pytest.raises(VolumeNotFoundError, match="missing.txt"):
        resolve_names("missing.txt", d)
    with pytest.raises(ConfigError, match="holds no names"):
        resolve_names("empty.txt", d)
    with pytest.raises(ConfigError, match="cannot read"):
        resolve_names("bad.txt", d)
    with pytest.raises(VolumeNotFoundError):
        resolve_names("dir.txt", d)


@pytest.mark.parametrize(
    "value", [None, "", "a.h5@", "@a.h5", "a@@b", [], ["a", 3], 5, ["ok", ""], "a\x00b"]
)
def test_malformed_values(value):
    with pytest.raises(ConfigError):
        resolve_names(value, "/data", what="IMAGE_NAME")


def test_malformed_input_path():
    with pytest.raises(ConfigError, match="INPUT_PATH"):
        resolve_names("a.h5", "/d@")


ALPHABET = st.sampled_from(
    list("ab.*?@ txlsimgpnd_-[]\\\x00é") + ["txt", "png", "**", "img", "list", "\udcff"]
)
TEXT = st.lists(ALPHABET, max_size=12).map("".join).filter(lambda s: ".." not in s)


@settings(max_examples=300, deadline=None)
@given(
    names=st.one_of(TEXT, st.lists(TEXT, max_size=4), st.none(), st.integers()),
    dirs=st.one_of(st.none(), TEXT),
    is_absolute=st.booleans(),
    expand=st.booleans(),
)
def test_parser_never_raises_anything_else(tree, names, dirs, is_absolute, expand):
    """Any value parses to a list of strings or raises ConfigError / VolumeNotFoundError."""
    with cwd(tree):  # relative names resolve inside the small test tree only
        try:
            out = resolve_names(names, dirs, is_absolute=is_absolute, expand_globs=expand)
        except (ConfigError, VolumeNotFoundError):
            return
    assert isinstance(out, list) and out
    assert all(isinstance(p, str) and p for p in out)
    if expand:
        assert not any("*" in p or "?" in p for p in out)
    if (
        isinstance(names, str)
        and "@" not in names
        and ".txt" not in names
        and "*" not in names
        and "?" not in names
    ):
        assert len(out) == 1 and out[0].endswith(names)


@settings(max_examples=100, deadline=None)
@given(
    parts=st.lists(
        st.text(
            st.characters(blacklist_characters="@\x00*?", blacklist_categories=("Cs",)), min_size=1
        ).filter(lambda s: s.strip() and not s.lower().endswith(".txt") and not is_url(s)),
        min_size=1,
        max_size=5,
    )
)
def test_at_join_roundtrip(parts):
    """'@'.join(parts) resolves to the parts themselves (is_absolute) or joined with one dir
    (URLs, which are never joined, are tested on their own)."""
    assert resolve_names("@".join(parts), None, is_absolute=True) == parts
    assert resolve_names(parts, "/base") == [os.path.join("/base", p) for p in parts]
    dirs = [f"/d{i}" for i in range(len(parts))]
    assert resolve_names("@".join(parts), "@".join(dirs)) == [
        os.path.join(d, p) for d, p in zip(dirs, parts)
    ]


def test_only_a_scheme_makes_a_url():
    """``scheme://`` at the start is a URL (never joined with INPUT_PATH); '://' elsewhere is a
    path (a hypothesis example once treated the name '://' as a URL)."""
    assert is_url("precomputed://file:///data/em") and is_url("gs://bucket/em") and is_url("file:///x")
    assert not is_url("://") and not is_url("data/a://b") and not is_url("1x://y")
    assert resolve_names("://", "/base") == [os.path.join("/base", "://")]
    assert resolve_names("precomputed://file:///data/em", "/base") == ["precomputed://file:///data/em"]
