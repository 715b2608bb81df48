#!/usr/bin/env python
"""Write docs/config_reference.md from the config schema."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectomics_data.config.reference import render_reference  # noqa: E402
from connectomics_data.io.atomic import atomic_output  # noqa: E402

if __name__ == "__main__":
    target = ROOT / "docs" / "config_reference.md"
    with atomic_output(target) as tmp:
        tmp.write_text(render_reference())
    print(f"wrote {target}")
