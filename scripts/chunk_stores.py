#!/usr/bin/env python
"""List the shared-memory chunk stores of chunked training runs; --remove those of killed runs.

Thin wrapper: the logic is in connectomics_data.datasets.chunk_cleanup. A store of a running
training is never removed (its owner holds a lock on it); a store whose run was killed with
kill -9 is "left over" and holds RAM in /dev/shm until removed (the next chunked run in the
same root removes it too).
"""

from __future__ import annotations

import sys
from pathlib import Path as _Path

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # run from a clone without installing

from connectomics_data.datasets.chunk_cleanup import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
