"""Write the reference benchmark input: a seeded, EM-like uint8 image and uint16 instance labels.

``python benchmarks/make_volume.py [--out-dir benchmarks/data] [--shape 100 1024 1024] [--seed 0]``
writes ``image.h5`` and ``label.h5`` (dataset ``main``, uncompressed, z-y-x) under ``--out-dir``
(git-ignored ``benchmarks/data/`` by default).

The image: smooth background texture, dark membrane-like curves (the zero level sets of smooth
random fields, so they close into cell-like compartments), dark textured ellipsoidal
'mitochondria' (anisotropic: a few slices thick, elongated in-plane), and pixel noise. The
label holds one uint16 id per ellipsoid; ellipsoids are added until ``--fg`` of the voxels are
foreground (default 7 %). Everything derives from one ``numpy.random.Generator(--seed)``.

Cost: smooth fields are upsampled from a coarse grid with separable Gaussian interpolation
matrices (two small matrix products per slice), so 100 x 1024 x 1024 takes well under a minute
on 2 cores and about 0.5 GB of memory.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectomics_data.io import write_hdf5  # noqa: E402


def interp_matrix(n_out: int, n_in: int, sigma: float = 0.7) -> np.ndarray:
    """``(n_out, n_in)`` float32 rows of normalised Gaussian weights: smooth upsampling."""
    pos = np.linspace(0, n_in - 1, n_out)[:, None]
    w = np.exp(-0.5 * ((pos - np.arange(n_in)[None, :]) / sigma) ** 2)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


class SmoothField:
    """A smooth random field over ``shape``, evaluated one z-slice at a time.

    ``cell`` is the correlation length in voxels (z, y, x); values are roughly N(0, 1).
    """

    def __init__(self, rng: np.random.Generator, shape, cell):
        coarse = [max(2, int(np.ceil(n / c)) + 2) for n, c in zip(shape, cell)]
        self.grid = rng.standard_normal(coarse).astype(np.float32)
        self.mz, self.my, self.mx = (interp_matrix(n, c) for n, c in zip(shape, coarse))
        self.scale = 1.0 / np.float32(np.sqrt((self.my**2).sum(1).mean() * (self.mx**2).sum(1).mean()
                                                * (self.mz**2).sum(1).mean()))

    def slice(self, z: int) -> np.ndarray:
        plane = np.tensordot(self.mz[z], self.grid, axes=(0, 0))  # (Yc, Xc)
        return (self.my @ plane @ self.mx.T) * self.scale


def add_mitochondria(label: np.ndarray, rng: np.random.Generator, fg: float) -> int:
    """Paint ellipsoids with ids 1, 2, ... until a fraction ``fg`` of voxels is foreground."""
    z_n, y_n, x_n = label.shape
    target = fg * label.size
    count = 0
    next_id = 1
    while count < target and next_id < 65535:
        rz = rng.uniform(1.5, 5.0)
        ry, rx = rng.uniform(8, 22), rng.uniform(20, 70)
        theta = rng.uniform(0, np.pi)
        cz, cy, cx = rng.uniform(0, z_n), rng.uniform(0, y_n), rng.uniform(0, x_n)
        r = max(ry, rx)
        z0, z1 = max(0, int(cz - rz)), min(z_n, int(cz + rz) + 1)
        y0, y1 = max(0, int(cy - r)), min(y_n, int(cy + r) + 1)
        x0, x1 = max(0, int(cx - r)), min(x_n, int(cx + r) + 1)
        if z0 >= z1 or y0 >= y1 or x0 >= x1:
            continue
        zz, yy, xx = np.ogrid[z0:z1, y0:y1, x0:x1]
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        inside = ((zz - cz) / rz) ** 2 + (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
        region = label[z0:z1, y0:y1, x0:x1]
        count += int(np.count_nonzero(inside & (region == 0)))
        region[inside] = next_id
        next_id += 1
    return next_id - 1


def make_volume(shape, seed: int = 0, fg: float = 0.07) -> tuple[np.ndarray, np.ndarray]:
    """``(image uint8, label uint16)`` of ``shape`` (z, y, x)."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint16)
    add_mitochondria(label, rng, fg)
    texture = SmoothField(rng, shape, (4, 12, 12))
    membranes = [SmoothField(rng, shape, (10, 90, 90)) for _ in range(2)]
    image = np.empty(shape, np.uint8)
    for z in range(shape[0]):
        plane = 165 + 18 * texture.slice(z)
        for field in membranes:
            f = field.slice(z)
            plane -= 95 * np.exp(-(f * f) * 60.0)  # thin dark band around each zero level set
        mito = label[z] != 0
        plane[mito] = plane[mito] * 0.45 + 10
        plane += rng.standard_normal(plane.shape, dtype=np.float32) * 10
        image[z] = np.clip(plane, 0, 255).astype(np.uint8)
    return image, label


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "data"))
    parser.add_argument("--shape", type=int, nargs=3, default=[100, 1024, 1024], metavar=("Z", "Y", "X"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fg", type=float, default=0.07, help="foreground fraction of the label")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    image, label = make_volume(tuple(args.shape), args.seed, args.fg)
    out = Path(args.out_dir)
    write_hdf5(out / "image.h5", image, compression=None)
    write_hdf5(out / "label.h5", label, compression=None)
    print(f"wrote {out / 'image.h5'} {list(image.shape)} uint8 and {out / 'label.h5'} uint16: "
          f"{int(label.max())} objects, {np.count_nonzero(label) / label.size:.1%} foreground, "
          f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
