"""Render the config reference (every key, default, meaning) as markdown from the schema."""

from __future__ import annotations

from .schema import KEYS, NODE_DOCS


def _fmt(value) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return f"`{text}`".replace("|", "\\|")


def render_reference() -> str:
    lines = [
        "# Config reference",
        "",
        "Every key of `connectomics_data`'s yacs config: PyTC v1's tree (same names, defaults and",
        "types, so PyTC YAML files load unmodified) plus the keys new in this project. Generated from",
        "`connectomics_data/config/schema.py` by `python scripts/gen_config_reference.py`; a test",
        "keeps it in sync.",
        "",
        "Column *status*: **used** = acted on; **PyTC only** = accepted so PyTC files load, but not",
        "acted on (setting one to a non-default value prints one warning listing them all);",
        "**new** = a key of this project.",
        "",
        "Merge order: defaults -> `--config-base` -> `--config-file` -> command-line `KEY VALUE`",
        "pairs -> `INFERENCE.*` overrides (with `--inference`) -> derived values -> validation.",
        "",
    ]
    section = None
    for spec in KEYS:
        node = spec.key.rsplit(".", 1)[0]
        top = spec.key.split(".")[0]
        if node != section:
            section = node
            level = "##" if node == top else "###"
            lines += ["", f"{level} {node}", ""]
            if node in NODE_DOCS:
                lines += [NODE_DOCS[node], ""]
            lines += ["| key | default | status | meaning |", "| --- | --- | --- | --- |"]
        status = "new" if spec.origin == "ours" else ("used" if spec.acted_on else "PyTC only")
        meaning = spec.meaning.replace("|", "\\|")
        lines.append(f"| `{spec.key}` | {_fmt(spec.default)} | {status} | {meaning} |")
    return "\n".join(lines) + "\n"
