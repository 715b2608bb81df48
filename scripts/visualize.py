"""Render a PNG grid of what the training augmentor does to a crop of real data.

    python scripts/visualize.py --image IMG.h5 --label LBL.h5 --out aug.png \
        [--config-file F] [--seed N] [--input-size Z Y X] [--slices 3]

One row per transform (alone, probability 1) and two rows of the full chain; each row shows
evenly spaced output slices with the label's boundaries in red. The crop (``sample_size`` of
the augmentor) is taken at the volume centre, or at a position drawn from ``--seed`` with
``--random-position``; parts outside the volume are reflected.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path as _Path  # noqa: E402

import numpy as np

sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))  # run from a clone without installing

from connectomics_data.augment import Compose, build_train_augmentor  # noqa: E402
from connectomics_data.augment.visualize import render_grid  # noqa: E402
from connectomics_data.config import load_cfg  # noqa: E402
from connectomics_data.errors import ConnectomicsDataError  # noqa: E402
from connectomics_data.geometry import Box  # noqa: E402
from connectomics_data.io import atomic_output, open_volume  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", required=True, help="image volume (h5, tif, zarr, ...)")
    ap.add_argument("--label", help="label volume (optional)")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--config-file", help="YAML config (PyTC v1 keys); default: the defaults")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--input-size",
        type=int,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="overrides MODEL.INPUT_SIZE",
    )
    ap.add_argument("--slices", type=int, default=3, help="slices shown per row")
    ap.add_argument(
        "--random-position", action="store_true", help="crop at a seeded random position"
    )
    return ap.parse_args(argv)


def crop_box(shape: tuple[int, ...], size: tuple[int, ...], rng: np.random.Generator | None) -> Box:
    start = []
    for n, s in zip(shape[-3:], size):
        lo = (n - s) // 2 if rng is None or n <= s else int(rng.integers(0, n - s + 1))
        start.append(lo)
    return Box.from_shape(size, start)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return _run(args)
    except ConnectomicsDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    cfg = load_cfg(args.config_file, freeze=False)
    if args.input_size:
        cfg.MODEL.INPUT_SIZE = list(args.input_size)
    comp = build_train_augmentor(cfg) or Compose([], cfg.MODEL.INPUT_SIZE)
    image = open_volume(args.image)
    rng = np.random.default_rng(args.seed) if args.random_position else None
    box = crop_box(image.shape, comp.sample_size, rng)
    sample = {"image": image.read(box, pad_mode="reflect")}
    if args.label:
        sample["label"] = open_volume(args.label).read(box, pad_mode="reflect")
    grid = render_grid(sample, comp, seed=args.seed, n_slices=args.slices)
    with atomic_output(args.out) as tmp:
        grid.save(tmp, format="PNG")
    print(
        f"wrote {args.out}: {grid.size[0]}x{grid.size[1]} px, input {list(comp.input_size)}, "
        f"sample {list(comp.sample_size)}, crop {list(box.start)}..{list(box.stop)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
