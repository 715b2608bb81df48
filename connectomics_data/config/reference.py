"""Render the config reference (every key, default, meaning) as markdown from the schema."""

from __future__ import annotations

from .schema import KEYS, NODE_DOCS


def _fmt(value) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return f"`{text}`".replace("|", "\\|")


#: how DATASET.LOAD_2D, DATASET.DO_2D and INFERENCE.DO_SINGLY combine (rendered in the reference)
TWO_D_KEYS = [
    "2D data: three keys, three jobs. `DATASET.LOAD_2D` decides how files are *read* (each 2D",
    "image is its own one-slice volume; without it a glob such as `'im/*.png'` is one stack with",
    "one file per z), `DATASET.DO_2D` decides the *model* (2D network, samples `[1, y, x]`), and",
    "`INFERENCE.DO_SINGLY` decides the *outputs* (one output file per input file). For",
    "`IMAGE_NAME: 'im/*.png'` matching N files:",
    "",
    "| LOAD_2D | DO_2D | training and plain inference see | `--inference` with DO_SINGLY writes |",
    "| --- | --- | --- | --- |",
    "| False | False | one (N, y, x) stack, 3D model | N outputs (one per PNG, each (1, y, x)) |",
    "| False | True | one (N, y, x) stack, 2D model slice by slice | N outputs |",
    "| True | True | N one-slice volumes, 2D model | N outputs |",
    "| True | False | N one-slice volumes, 3D model | N outputs |",
    "",
    "DO_SINGLY always expands a glob or list to its files, whatever LOAD_2D says, and an output",
    "name never holds a glob character (`*`, `?`, `[`, `]`): use `{stem}` or `{index}` in",
    "`INFERENCE.OUTPUT_NAME`. Without DO_SINGLY all inputs go to one output file.",
    "",
]


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
        *TWO_D_KEYS,
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
