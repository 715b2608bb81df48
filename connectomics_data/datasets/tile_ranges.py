"""Volume-wide statistics of huge (tiled) volumes, estimated from a few evenly spaced slices.

:func:`~connectomics_data.normalize.normalizer_for` maps a non-uint8 image to [0, 1] by the
``(min, max)`` of the whole volume, and ``LABEL_BINARY`` looks at the label's maximum. On a
tiled volume of 10^12 voxels a full pass is not affordable, and a per-chunk range would make a
sample's brightness depend on its chunk. So these statistics are taken once, from up to
``count`` z slices evenly spaced over the used range (:class:`SliceSampleVolume`), and then hold
for every chunk. Values outside the estimated range map slightly outside [0, 1].
"""

from __future__ import annotations

import numpy as np

from ..geometry import Box
from ..io.base import Volume
from ..normalize import ImageNormalizer, normalizer_for, volume_range

DEFAULT_SLICES = 16


class SliceSampleVolume(Volume):
    """Up to ``count`` evenly spaced z slices of ``volume`` inside ``box`` (read on demand).

    Shape ``(*channels, n, box_y, box_x)`` with ``n = min(count, box depth)``; dtype kept.
    """

    def __init__(self, volume: Volume, box: Box | None = None, count: int = DEFAULT_SLICES):
        self.base = volume
        self.box = box if box is not None else volume.full_box()
        self.path = f"{volume.path} (sampled slices)"
        self.spatial_ndim = 3
        depth = self.box.shape[0]
        n = max(1, min(int(count), depth))
        self.z = np.unique(np.round(np.linspace(self.box.start[0], self.box.stop[0] - 1, n)).astype(np.int64))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.base.channel_shape) + (len(self.z), *self.box.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.base.dtype

    def _read_inside(self, box: Box) -> np.ndarray:
        nch = len(self.base.channel_shape)
        (z0, y0, x0), (z1, y1, x1) = box.start, box.stop
        oy, ox = self.box.start[1], self.box.start[2]
        parts = [self.base.read(Box([int(z), oy + y0, ox + x0], [int(z) + 1, oy + y1, ox + x1]))
                 for z in self.z[z0:z1]]
        return np.concatenate(parts, axis=nch)


def sampled_normalizer(volume: Volume, box: Box | None, mean: float, std: float, match_act: str,
                       normalize_range: bool = True, count: int = DEFAULT_SLICES) -> ImageNormalizer:
    """:func:`normalizer_for` with the range taken from :class:`SliceSampleVolume` slices."""
    return normalizer_for(SliceSampleVolume(volume, box, count), mean, std, match_act, normalize_range)


def sampled_max(volume: Volume, box: Box | None = None, count: int = DEFAULT_SLICES) -> float:
    """The maximum over the sampled slices (for ``LABEL_BINARY``'s ``max > 1`` test)."""
    return volume_range(SliceSampleVolume(volume, box, count))[1]
