"""Edge smoothing of warped masks (``AUGMENTOR.SMOOTH``, off by default).

PyTC's ``smooth_edge``: per section and per non-zero id, the id's binary mask is blurred with a
Gaussian (sigma 2) and thresholded at 0.5, twice; the id's old pixels are cleared and the
smoothed ones set (later ids win). Thin structures (under about 2 sigma) disappear. The cost
grows with the number of ids; here each id is processed on its bounding box only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def smooth_edges(mask: np.ndarray, sigma: float = 2.0, rounds: int = 2) -> np.ndarray:
    """Smoothed copy of ``mask`` ``(z, y, x)`` or ``(c, z, y, x)`` (any integer/bool dtype).

    Output values are a subset of the input values (ids only move or vanish).
    """
    out = mask.copy()
    flat = out.reshape((-1,) + out.shape[-2:])
    pad = int(np.ceil(4 * sigma)) * rounds + 1
    for s in range(flat.shape[0]):
        sec = flat[s]
        src = sec.copy()
        dense, ids = _dense_ids(src)
        objects = ndimage.find_objects(dense)
        for label_index, box in enumerate(objects):
            if box is None:
                continue
            value = ids[label_index]
            y0 = max(box[0].start - pad, 0)
            y1 = min(box[0].stop + pad, sec.shape[0])
            x0 = max(box[1].start - pad, 0)
            x1 = min(box[1].stop + pad, sec.shape[1])
            win = (slice(y0, y1), slice(x0, x1))
            binary = (src[win] == value).astype(np.float32)
            for _ in range(rounds):
                binary = (ndimage.gaussian_filter(binary, sigma) > 0.5).astype(np.float32)
            region = sec[win]
            region[region == value] = 0
            region[binary > 0] = value
    return out


def _dense_ids(section: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relabel the non-zero values of a section as 1..n (for ``find_objects``) and the ids."""
    ids, inverse = np.unique(section, return_inverse=True)
    dense = inverse.reshape(section.shape).astype(np.int64)
    if ids.size and ids[0] == 0:
        return dense, ids[1:]
    return dense + 1, ids
