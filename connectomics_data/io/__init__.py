"""Volume sources behind one interface (shape, dtype, read(box)) and atomic writers."""

from .atomic import atomic_output
from .base import PAD_MODES, ArrayVolume, Volume, source_indices

__all__ = ["PAD_MODES", "ArrayVolume", "Volume", "atomic_output", "source_indices"]
