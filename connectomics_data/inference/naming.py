"""Output names from ``INFERENCE.OUTPUT_NAME``: a restricted template, never ``eval``'d.

Placeholders (``str.format`` syntax, format specs allowed, e.g. ``{index:04d}``):

* ``{stem}``: the input file name without directory and last extension (``im0001`` for
  ``/data/im0001.png``, ``vol.ome`` for ``vol.ome.zarr``),
* ``{name}``: the input file name with its extension (``im0001.png``),
* ``{index}``: the input's position in the full file list (before sharding).

Nothing else is accepted: attribute access (``{stem.upper}``), indexing (``{stem[0]}``),
conversions (``{stem!r}``), positional fields (``{}``) and unknown names raise
:class:`ConfigError` naming ``INFERENCE.OUTPUT_NAME``.

A plain name without braces, e.g. PyTC's default ``result.h5``, is a suffix: it means
``{stem}_result.h5`` (PyTC's own fallback was ``<input>_result.h5``), so one config gives every
input its own output.

The output format's extension is then ensured (see :func:`~.outputs.with_extension`): kept
when present, '.h5' and '.zarr' swapped, otherwise appended.
"""

from __future__ import annotations

import string
from pathlib import Path

from ..errors import ConfigError
from .outputs import with_extension

PLACEHOLDERS = ("stem", "name", "index")
KEY = "INFERENCE.OUTPUT_NAME"
#: characters a glob pattern uses; an output name holding one is refused (it would be read back
#: as a pattern, and usually means an unexpanded input glob named the output)
GLOB_CHARACTERS = "*?[]"


def check_output_name(name: str, template: str | None = None, input_path: str | None = None) -> str:
    """``name`` when it holds no glob character, else :class:`ConfigError` naming the key."""
    bad = sorted({c for c in name if c in GLOB_CHARACTERS})
    if bad:
        source = f" gives {name!r} for {input_path}" if input_path is not None else ""
        shown = template if template is not None else name
        raise ConfigError(
            f"{KEY} {shown!r}{source}: an output name must not "
            f"hold a glob character ({', '.join(repr(c) for c in bad)}); use {{stem}} or {{index}} "
            "to name one output per input file"
        )
    return name


class _RestrictedFormatter(string.Formatter):
    def __init__(self, template: str):
        self.template = template

    def _fail(self, why: str) -> ConfigError:
        return ConfigError(
            f"{KEY} {self.template!r}: {why}; only the placeholders "
            f"{{stem}}, {{name}} and {{index}} are allowed"
        )

    def get_field(self, field_name, args, kwargs):
        if field_name not in PLACEHOLDERS:
            raise self._fail(f"unsupported field {{{field_name}}}")
        return kwargs[field_name], field_name

    def convert_field(self, value, conversion):
        if conversion is not None:
            raise self._fail(f"conversion '!{conversion}' is not allowed")
        return value

    def format_field(self, value, format_spec):
        if "{" in format_spec:
            raise self._fail("nested fields in format specs are not allowed")
        try:
            return format(value, format_spec)
        except (ValueError, TypeError) as err:
            raise self._fail(f"bad format spec {format_spec!r} ({err})") from err


def validate_template(template: str) -> None:
    """Raise :class:`ConfigError` when ``template`` is not a valid output-name template."""
    format_output_name(template, "input.h5", 0)


def format_output_name(template: str, input_path: str, index: int, fmt: str | None = None) -> str:
    """The output file name for input ``input_path`` (position ``index`` in the file list).

    Args:
        template: ``INFERENCE.OUTPUT_NAME``.
        fmt: 'h5' | 'zarr': ensure that format's extension (None: leave the name as is).
    """
    if not isinstance(template, str) or not template:
        raise ConfigError(f"{KEY} must be a non-empty string, got {template!r}")
    path = Path(str(input_path).rstrip("/"))
    values = {"stem": path.stem, "name": path.name, "index": int(index)}
    if "{" not in template and "}" not in template:
        name = f"{values['stem']}_{template}"
    else:
        formatter = _RestrictedFormatter(template)
        try:
            name = formatter.vformat(template, (), values)
        except ConfigError:
            raise
        except (ValueError, IndexError, KeyError) as err:
            raise formatter._fail(f"malformed template ({err})") from err
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ConfigError(f"{KEY} {template!r} gives {name!r} for {input_path}: not a file name")
    check_output_name(name, template, input_path)
    return with_extension(name, fmt) if fmt is not None else name
