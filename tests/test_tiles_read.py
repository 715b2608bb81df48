"""TiledVolume.read(box) equals np.pad(full, ...)[box] for every layout, box and pad mode."""

from __future__ import annotations

import multiprocessing
import pickle

import numpy as np
import pytest
from _tiles_common import em_like, reference_read, write_tiles
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectomics_data.geometry import Box
from connectomics_data.io.base import PAD_MODES
from connectomics_data.io.tiles.volume import TiledVolume, open_tiled_volume

SHAPE = (5, 21, 26)  # 21 = 2*8 + 5 and 26 = 3*8 + 2: non-divisible last row and column

# name -> (write_tiles kwargs, open kwargs, dtype)
LAYOUTS = {
    "single": ({"tile": None}, {}, "uint8"),
    "multi": ({"tile": (8, 8)}, {}, "uint8"),
    "multi_rect": ({"tile": (8, 11)}, {}, "uint8"),
    "tile_st_1_1": ({"tile": (8, 8), "tile_st": (1, 1)}, {}, "uint8"),
    "padded_last": ({"tile": (8, 8), "pad_last": True}, {}, "uint8"),
    "uint16_multi": ({"tile": (8, 8)}, {}, "uint16"),
    "uint16_single_tif": ({"tile": None, "ext": "tif"}, {}, "uint16"),
    "tif_multi_zero_padded": ({"tile": (8, 8), "ext": "tif", "pattern": "r{row:02d}_c{column:03d}"}, {}, "uint8"),
    "vast_multi": ({"tile": (8, 8), "vast": True}, {"label_vast": True}, "uint32"),
    "vast_single": ({"tile": None, "vast": True}, {"label_vast": True}, "uint32"),
    "absolute_paths": ({"tile": (8, 8), "relative": False}, {}, "uint8"),
    "uint32_tif_labels": ({"tile": None, "ext": "tif"}, {}, "uint32_full"),  # MitoEM mito_train
}


def _make_volume(dtype: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "uint32":  # VAST ids: spread over all three bytes
        return rng.integers(0, 2**24, size=SHAPE, dtype=np.int64).astype(np.uint32)
    if dtype == "uint32_full":  # ids above 2**24 must survive
        return rng.integers(0, 2**32, size=SHAPE, dtype=np.int64).astype(np.uint32)
    return em_like(rng, SHAPE, dtype)


@pytest.fixture(scope="module")
def tiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[np.ndarray, TiledVolume]]:
    out = {}
    for i, (name, (wkw, okw, dtype)) in enumerate(LAYOUTS.items()):
        full = _make_volume(dtype, seed=i)
        path = write_tiles(tmp_path_factory.mktemp(name), full, **wkw)
        # a small cache (a few tiles) so reads also exercise eviction
        out[name] = (full, open_tiled_volume(path, threads=2, cache_bytes=4 * 8 * 11 * 4, **okw))
    return out


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_full_read_equals_volume_and_keeps_dtype(tiled, name):
    full, vol = tiled[name]
    assert vol.shape == full.shape
    assert vol.dtype == full.dtype
    got = vol.read()
    assert got.dtype == full.dtype
    np.testing.assert_array_equal(got, full)
    if full.dtype == np.uint16:
        assert got.max() > 255  # 16-bit values are not wrapped to uint8


def _box(draw, shape):
    start, stop = [], []
    for n in shape:
        a = draw(st.integers(-2 * n, 2 * n))
        b = draw(st.integers(a + 1, a + 2 * n))  # non-empty: empty boxes tested separately
        start.append(a)
        stop.append(b)
    return Box(start, stop)


@st.composite
def boxes(draw):
    return _box(draw, SHAPE)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(LAYOUTS)), box=boxes(), mode=st.sampled_from(PAD_MODES))
def test_any_box_equals_numpy_pad(tiled, name, box, mode):
    full, vol = tiled[name]
    got = vol.read(box, pad_mode=mode, cval=7)
    assert got.shape == box.shape
    assert got.dtype == full.dtype
    np.testing.assert_array_equal(got, reference_read(full, box, mode, cval=7))


@st.composite
def inside_boxes(draw):
    start = [draw(st.integers(0, n - 1)) for n in SHAPE]
    stop = [draw(st.integers(a + 1, n)) for a, n in zip(start, SHAPE)]
    return Box(start, stop)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(inside=inside_boxes())
def test_inside_boxes_single_thread_uncached(tiled, inside):
    full, vol = tiled["multi"]
    plain = TiledVolume(vol.spec, threads=1, cache_bytes=0)
    np.testing.assert_array_equal(plain.read(inside), full[inside.slices()])


@pytest.mark.parametrize("box", [Box((0, 0, 0), (0, 5, 5)), Box((1, 3, 4), (2, 3, 9)), Box((2, 5, 5), (2, 5, 5))])
def test_empty_inside_box(tiled, box):
    full, vol = tiled["multi"]
    got = vol.read(box)
    assert got.shape == box.shape and got.dtype == full.dtype


def test_pickle_drops_cache_and_reads_the_same(tiled):
    full, vol = tiled["multi"]
    vol.read()
    assert vol.cache_info()["entries"] > 0
    clone = pickle.loads(pickle.dumps(vol))
    assert clone._cache is None and clone._executor is None
    np.testing.assert_array_equal(clone.read(), full)
    info = clone.cache_info()
    assert info["hits"] == 0 and info["misses"] > 0  # a fresh cache, rebuilt lazily


_FORK_VOLUME: TiledVolume | None = None


def _read_in_child() -> np.ndarray:
    assert _FORK_VOLUME is not None
    return _FORK_VOLUME.read()


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_forked_child_rebuilds_thread_pool(tiled):
    """A volume used (thread pool started) before fork must still read in the child."""
    global _FORK_VOLUME
    full, vol = tiled["multi"]
    vol.read()  # starts the decode threads in the parent
    _FORK_VOLUME = vol
    try:
        with multiprocessing.get_context("fork").Pool(1) as pool:
            got = pool.apply_async(_read_in_child).get(timeout=60)
    finally:
        _FORK_VOLUME = None
    np.testing.assert_array_equal(got, full)


def test_concurrent_readers_agree(tiled):
    from concurrent.futures import ThreadPoolExecutor

    full, vol = tiled["tile_st_1_1"]
    vol.clear_cache()
    rng = np.random.default_rng(0)
    starts = rng.integers(-3, [5, 21, 26], size=(32, 3))
    bxs = [Box(s, s + np.array([3, 9, 10])) for s in starts]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda b: vol.read(b, "reflect"), bxs))
    for b, r in zip(bxs, results):
        np.testing.assert_array_equal(r, reference_read(full, b, "reflect"))


def test_tile_ratio_zooms_each_tile(tmp_path):
    """tile_ratio 2: half-size files are zoomed (order 1 image, 0 label) and assembled."""
    from scipy.ndimage import zoom

    rng = np.random.default_rng(3)
    small = em_like(rng, (2, 10, 13))  # tiles of 4 -> 8 after zoom; last row 2 -> 4, col 1 -> 2
    path = write_tiles(tmp_path / "img", small, tile=(4, 4), extra={"tile_ratio": 2, "tile_size": 8,
                                                                   "height": 20, "width": 26})
    vol = open_tiled_volume(path)
    expect = np.zeros((2, 20, 26), np.uint8)
    for z in range(2):
        for r in range(3):
            for c in range(4):
                t = zoom(small[z, r * 4 : r * 4 + 4, c * 4 : c * 4 + 4], 2, order=1, grid_mode=False)
                y1, x1 = min(20, r * 8 + 8), min(26, c * 8 + 8)
                expect[z, r * 8 : y1, c * 8 : x1] = t[: y1 - r * 8, : x1 - c * 8]
    np.testing.assert_array_equal(vol.read(), expect)

    labels = rng.integers(0, 5, size=(2, 10, 13)).astype(np.uint16) * 1000
    lpath = write_tiles(tmp_path / "lab", labels, tile=(4, 4), extra={"tile_ratio": 2, "tile_size": 8,
                                                                     "height": 20, "width": 26})
    lab = open_tiled_volume(lpath, is_label=True).read()
    assert set(np.unique(lab)) <= set(np.unique(labels))  # nearest neighbour: no new ids
    np.testing.assert_array_equal(lab[:, ::2, ::2], labels)


def test_palette_png_labels_keep_indices_images_use_red_channel(tmp_path):
    import json

    from PIL import Image

    rng = np.random.default_rng(1)
    ids = rng.integers(0, 6, size=(9, 7)).astype(np.uint8)
    palette = rng.permutation(256 * 3) % 256  # colours unrelated to the indices
    im = Image.new("P", (7, 9))
    im.putdata(ids.ravel().tolist())
    im.putpalette(palette.astype(np.uint8).tolist())
    (tmp_path / "s").mkdir()
    im.save(tmp_path / "s" / "a.png")
    (tmp_path / "t.json").write_text(json.dumps({"image": ["s/a.png"], "height": 9, "width": 7,
                                                 "depth": 1, "tile_size": 9, "dtype": "uint8"}))
    labels = open_tiled_volume(tmp_path / "t.json", is_label=True).read()
    np.testing.assert_array_equal(labels[0], ids)
    image = open_tiled_volume(tmp_path / "t.json").read()
    np.testing.assert_array_equal(image[0], palette[ids.astype(int) * 3])  # PyTC: channel 0 (red)


def test_rgb_image_tiles_keep_channel_0(tmp_path):
    rgb = np.random.default_rng(4).integers(0, 256, size=(2, 9, 11, 3)).astype(np.uint8)
    from _tiles_common import save_image

    for z in range(2):
        for r in range(2):
            for c in range(2):
                save_image(tmp_path / f"s{z}" / f"{r}_{c}.png", rgb[z, r * 5 : r * 5 + 5, c * 6 : c * 6 + 6])
    import json

    (tmp_path / "t.json").write_text(json.dumps({"image": [f"s{z}/{{row}}_{{column}}.png" for z in range(2)],
                                                 "height": 9, "width": 11, "depth": 2, "tile_size": [5, 6]}))
    vol = open_tiled_volume(tmp_path / "t.json")
    assert vol.dtype == np.uint8  # dtype defaults to uint8
    np.testing.assert_array_equal(vol.read(), rgb[..., 0])
