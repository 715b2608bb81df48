#!/usr/bin/env python
"""Blockwise inference on daisy workers into one zarr; rerun the same command to resume.

    python scripts/predict_blockwise.py --config-file configs/mito.yaml --checkpoint C --workers 4
    python scripts/predict_blockwise.py --join outputs/mito_demo/test/result.zarr   # one more worker
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from connectomics_data.engine.blockwise_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
