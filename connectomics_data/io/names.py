"""PyTC's file-name syntax for ``IMAGE_NAME`` / ``LABEL_NAME`` / ``VALID_MASK_NAME``.

A name value is one of:

* a YAML list of names;
* a string of names joined with '@' (``'a.h5@b.h5'``);
* a ``.txt`` file with one name per line (blank lines ignored);
* a glob pattern (``'image/*.png'``, recursive ``'**'`` allowed), expanded in sorted order.

Names are joined with ``INPUT_PATH`` unless ``IS_ABSOLUTE_PATH`` or they are URLs
(``precomputed://file:///data/em``). ``INPUT_PATH`` may itself be
'@'-joined: either one directory for all names or one per name (counted after ``.txt``
expansion, before glob expansion, as PyTC does). The ``.txt`` file is looked up as given, then
inside the (single) input directory.

Every malformed value raises :class:`ConfigError`; a missing ``.txt`` file or a glob matching
nothing raises :class:`VolumeNotFoundError`. Nothing else escapes.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence

from ..errors import ConfigError, VolumeNotFoundError

NameSpec = str | Sequence[str]


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
"""A URL starts with a scheme (``precomputed://``, ``file://``, ``gs://``); a name that merely
contains ``://`` elsewhere is a path."""


def is_glob(name: str) -> bool:
    """True when ``name`` is a glob pattern (contains ``*`` or ``?``)."""
    return "*" in name or "?" in name


def is_url(name: str) -> bool:
    """True for a URL such as ``precomputed://file:///data/em`` (never joined with INPUT_PATH)."""
    return _URL.match(name) is not None


def _check_part(part: object, value: object, what: str) -> str:
    if not isinstance(part, str):
        raise ConfigError(f"{what}: every name must be a string, got {part!r} in {value!r}")
    if part.strip() == "":
        raise ConfigError(f"{what}: empty name in {value!r} (check for a stray '@' or blank entry)")
    if "\x00" in part:
        raise ConfigError(f"{what}: name {part!r} contains a NUL character")
    return part


def split_names(names: NameSpec, what: str = "name") -> list[str]:
    """Split a name value (list or '@'-joined string) into parts, without reading any file."""
    if names is None:
        raise ConfigError(f"{what}: no file names given (the value is None)")
    if isinstance(names, str):
        parts = names.split("@")
    elif isinstance(names, (list, tuple)):
        parts = list(names)
        if not parts:
            raise ConfigError(f"{what}: the list of file names is empty")
    else:
        raise ConfigError(
            f"{what}: expected a string or a list of strings, got {type(names).__name__} {names!r}"
        )
    return [_check_part(p, names, what) for p in parts]


def split_dirs(input_path: NameSpec | None, what: str = "INPUT_PATH") -> list[str]:
    """Split ``INPUT_PATH`` ('@'-joined string or list) into directories; ``None`` means ''."""
    if input_path is None or input_path == "":
        return [""]
    return split_names(input_path, what)


def read_name_list(txt: str, dirs: Sequence[str], what: str = "name") -> list[str]:
    """The non-blank lines of a ``.txt`` name list, stripped."""
    candidates = [txt]
    if len(dirs) == 1 and dirs[0] and not os.path.isabs(txt):
        candidates.append(os.path.join(dirs[0], txt))
    for candidate in candidates:
        if os.path.isfile(candidate):
            try:
                with open(candidate, encoding="utf-8") as f:
                    lines = [line.strip() for line in f]
            except (OSError, ValueError) as err:
                raise ConfigError(f"{what}: cannot read the name list {candidate}: {err}") from err
            names = [line for line in lines if line]
            if not names:
                raise ConfigError(f"{what}: the name list {candidate} holds no names")
            for line in names:
                _check_part(line, candidate, what)
            return names
    raise VolumeNotFoundError(f"{what}: name list file not found: tried {candidates}")


def expand_glob(pattern: str, what: str = "name") -> list[str]:
    """Sorted matches of ``pattern`` (``'**'`` recursive); none is a VolumeNotFoundError."""
    try:
        matches = sorted(glob.glob(pattern, recursive=True))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{what}: cannot expand the pattern {pattern!r}: {err}") from err
    if not matches:
        raise VolumeNotFoundError(f"{what}: no files match the pattern {pattern!r}")
    return matches


def resolve_names(
    names: NameSpec,
    input_path: NameSpec | None,
    is_absolute: bool = False,
    expand_globs: bool = True,
    what: str = "name",
) -> list[str]:
    """Resolve a PyTC name value into file paths.

    Args:
        names: ``IMAGE_NAME``-style value (list, '@'-joined string, ``.txt`` list, glob).
        input_path: ``INPUT_PATH`` ('@'-joined or list of directories); ``None`` for none.
        is_absolute: ``IS_ABSOLUTE_PATH``: use the names as given (not joined).
        expand_globs: expand glob patterns into their sorted matches; ``False`` keeps each
            pattern as one entry (read as one stack of 2D slices by ``open_volume``).
        what: the config key, used in messages.

    Returns:
        The paths, in order. Existence of plain names is not checked here.
    """
    dirs = split_dirs(input_path)
    parts: list[str] = []
    for part in split_names(names, what):
        if part.lower().endswith(".txt") and not is_glob(part):
            parts.extend(read_name_list(part, dirs, what))
        else:
            parts.append(part)
    if is_absolute:
        joined = parts
    elif len(dirs) == 1:
        joined = [p if is_url(p) else os.path.join(dirs[0], p) for p in parts]
    elif len(dirs) == len(parts):
        joined = [p if is_url(p) else os.path.join(d, p) for d, p in zip(dirs, parts)]
    else:
        raise ConfigError(
            f"{what}: INPUT_PATH gives {len(dirs)} directories {dirs} but there are {len(parts)} "
            f"names {parts}; give one directory for all names or one per name"
        )
    out: list[str] = []
    for path in joined:
        if expand_globs and is_glob(path):
            out.extend(expand_glob(path, what))
        else:
            out.append(path)
    return out


def resolve_volume_specs(
    names: NameSpec,
    input_path: NameSpec | None,
    is_absolute: bool = False,
    load_2d: bool = False,
    what: str = "name",
) -> list[str]:
    """One entry per volume, as PyTC builds its volume list.

    With ``load_2d`` (``DATASET.LOAD_2D``) every matched 2D image is its own ``(1, y, x)``
    volume, so globs are expanded; otherwise a glob names one stack of slices and is kept as a
    single pattern for ``open_volume``.
    """
    return resolve_names(names, input_path, is_absolute, expand_globs=load_2d, what=what)
