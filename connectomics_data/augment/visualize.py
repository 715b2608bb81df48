"""A picture of what the augmentor does: original and augmented slices, label outlined.

:func:`render_grid` returns a PIL image with one row per transform (each alone, with
probability 1) and rows for the full chain, each row showing a few evenly spaced output slices
of the image with the label's object boundaries in red. ``scripts/visualize.py`` reads a crop
from files and saves the picture.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .compose import Compose

HEADER = 14  # pixels of title above each row
GAP = 4
OUTLINE_RGB = (255, 40, 40)


def outline(label: np.ndarray) -> np.ndarray:
    """Boolean ``(y, x)`` mask of voxels whose right or lower neighbour has another id."""
    edge = np.zeros(label.shape, bool)
    edge[:, :-1] |= label[:, :-1] != label[:, 1:]
    edge[:-1, :] |= label[:-1, :] != label[1:, :]
    return edge


def tile(image: np.ndarray, label: np.ndarray | None) -> np.ndarray:
    """RGB uint8 ``(y, x, 3)`` of a float ``[0, 1]`` slice with the label outlined."""
    gray = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    if label is not None:
        rgb[outline(label)] = OUTLINE_RGB
    return rgb


def _first_channel(a: np.ndarray) -> np.ndarray:
    return a[0] if a.ndim == 4 else a


def augmentation_rows(
    sample: Mapping[str, np.ndarray], compose: Compose, seed: int = 0, chain_rows: int = 2
) -> list[tuple[str, dict[str, Any]]]:
    """``(title, output)`` pairs: the unaugmented centre crop, each transform alone, then
    ``chain_rows`` draws of the full chain (seeds ``seed``, ``seed + 1``, ...)."""
    targets = compose.additional_targets
    rows = []
    plain = Compose([], compose.input_size, additional_targets=targets)
    rows.append(("input (centre crop)", plain(sample, np.random.default_rng(seed))))
    for t in compose.transforms:
        single = Compose([t.with_p(1.0)], compose.input_size, additional_targets=targets)
        rows.append(
            (
                repr(t).split("(")[0] + f" (p=1, seed {seed})",
                single(sample, np.random.default_rng(seed)),
            )
        )
    for k in range(chain_rows):
        rows.append(
            (f"full chain, seed {seed + k}", compose(sample, np.random.default_rng(seed + k)))
        )
    return rows


def render_grid(
    sample: Mapping[str, np.ndarray],
    compose: Compose,
    seed: int = 0,
    n_slices: int = 3,
    label_key: str = "label",
    chain_rows: int = 2,
) -> Any:
    """The PIL image of :func:`augmentation_rows`: ``n_slices`` evenly spaced z slices per row.

    ``sample`` holds at least ``compose.sample_size`` voxels (``'image'``, optionally
    ``label_key``). Size: ``n_slices * (X + 4)`` by ``rows * (Y + 18)`` pixels. With a single
    slice per row (2D, ``Z == 1``) the rows are laid out as a grid of ``ceil(sqrt(rows))``
    columns instead of one tall column, each cell at least as wide as its title.
    """
    from PIL import Image, ImageDraw

    rows = augmentation_rows(sample, compose, seed, chain_rows)
    Z, Y, X = compose.input_size
    zs = np.unique(np.linspace(0, Z - 1, min(n_slices, Z)).round().astype(int))
    panel = len(zs) * (X + GAP) - GAP  # width of one row's slices
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    titles = max(int(np.ceil(measure.textlength(title))) + 4 for title, _ in rows)
    cols = 1 if len(zs) > 1 else int(np.ceil(np.sqrt(len(rows))))
    cell = max(panel, titles if cols > 1 else 200)
    grid_rows = int(np.ceil(len(rows) / cols))
    width = cols * (cell + GAP) - GAP
    height = grid_rows * (Y + HEADER + GAP)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (title, out) in enumerate(rows):
        left, top = (r % cols) * (cell + GAP), (r // cols) * (Y + HEADER + GAP)
        draw.text((left + 2, top + 1), title, fill=(0, 0, 0))
        img = _first_channel(out["image"])
        lab = out.get(label_key)
        lab = _first_channel(lab) if isinstance(lab, np.ndarray) else None
        for c, z in enumerate(zs):
            rgb = tile(img[z], None if lab is None else lab[z])
            canvas.paste(Image.fromarray(rgb), (left + c * (X + GAP), top + HEADER))
    return canvas
