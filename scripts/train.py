#!/usr/bin/env python
"""Train on a PyTC v1-style config, or predict with --inference --checkpoint FILE.

    python scripts/train.py --config-file configs/mito.yaml [KEY VALUE ...]
    python scripts/train.py --config-file configs/mito.yaml --inference --checkpoint F
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from connectomics_data.engine.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
