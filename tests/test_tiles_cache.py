"""The decoded-tile LRU cache: byte limit, LRU order, statistics, coalesced loads; and its use
by TiledVolume (each tile decoded once while cached)."""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict

import numpy as np
import pytest
from _tiles_common import em_like, write_tiles
from hypothesis import given, settings
from hypothesis import strategies as st

import connectomics_data.io.tiles.volume as tiles_mod
from connectomics_data.geometry import Box
from connectomics_data.io.tiles.cache import TileCache
from connectomics_data.io.tiles.volume import open_tiled_volume


def arr(nbytes: int, fill: int = 0) -> np.ndarray:
    return np.full(nbytes, fill, dtype=np.uint8)


def test_lru_evicts_least_recently_used():
    c = TileCache(30)
    c.put("a", arr(10, 1))
    c.put("b", arr(10, 2))
    c.put("c", arr(10, 3))
    assert c.get("a")[0] == 1  # a is now most recently used
    c.put("d", arr(10, 4))  # evicts b, the least recently used
    assert "b" not in c and all(k in c for k in "acd")
    assert c.nbytes == 30 and c.evictions == 1
    assert (c.hits, c.misses) == (1, 0)
    assert c.get("b") is None and c.misses == 1


def test_oversize_tile_is_returned_not_cached():
    c = TileCache(15)
    c.put("a", arr(10))
    assert c.get_or_load("big", lambda: arr(16, 9))[0] == 9
    assert "big" not in c and "a" in c and c.nbytes == 10
    assert c.put("big", arr(16)) is False


def test_zero_limit_caches_nothing():
    c = TileCache(0)
    calls = []
    for _ in range(3):
        c.get_or_load("k", lambda: calls.append(1) or arr(1))
    assert len(calls) == 3 and len(c) == 0 and c.misses == 3


def test_cached_arrays_are_read_only():
    c = TileCache(100)
    a = c.get_or_load("k", lambda: arr(4))
    with pytest.raises(ValueError):
        a[0] = 1


@settings(max_examples=100, deadline=None)
@given(
    limit=st.integers(0, 64),
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 7), st.integers(0, 40)), max_size=60),
)
def test_matches_reference_lru_and_never_exceeds_limit(limit, ops):
    """Against a plain OrderedDict LRU model: same contents, nbytes == sum <= limit always."""
    c = TileCache(limit)
    model: OrderedDict[int, int] = OrderedDict()
    for is_put, key, size in ops:
        if is_put:
            c.put(key, arr(size, key))
            model.pop(key, None)
            if size <= limit:
                while sum(model.values()) + size > limit:
                    model.popitem(last=False)
                model[key] = size
        else:
            got = c.get(key)
            if key in model:
                model.move_to_end(key)
                assert got is not None and got.nbytes == model[key]
            else:
                assert got is None
        assert c.nbytes == sum(model.values()) <= limit
        assert list(c._data) == list(model)


def test_concurrent_loads_of_one_key_run_the_loader_once():
    c = TileCache(1000)
    started, release = threading.Event(), threading.Event()
    calls = []

    def load():
        calls.append(1)
        started.set()
        release.wait(10)
        return arr(8, 5)

    results = []
    threads = [threading.Thread(target=lambda: results.append(c.get_or_load("k", load))) for _ in range(4)]
    threads[0].start()
    started.wait(10)
    for t in threads[1:]:
        t.start()
    release.set()
    for t in threads:
        t.join(10)
    assert len(calls) == 1 and len(results) == 4 and all(r[0] == 5 for r in results)
    assert (c.misses, c.hits) == (1, 3)


def test_failed_load_raises_in_waiters_and_is_retried():
    c = TileCache(1000)

    def bad():
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        c.get_or_load("k", bad)
    assert c.get_or_load("k", lambda: arr(2, 1))[0] == 1  # not poisoned


# ---------------------------------------------------------------- through TiledVolume
@pytest.fixture
def counted(tmp_path, monkeypatch):
    """A 4 x 20 x 27 uint8 volume in 8 x 8 tiles (3 x 4 per slice), and a decode counter."""
    full = em_like(np.random.default_rng(0), (4, 20, 27))
    path = write_tiles(tmp_path, full, tile=(8, 8))
    decodes: Counter[str] = Counter()
    real = tiles_mod.decode_tile

    def counting(p, *a, **k):
        decodes[p] += 1
        decodes["thread:" + threading.current_thread().name.split("_")[0]] += 1
        return real(p, *a, **k)

    monkeypatch.setattr(tiles_mod, "decode_tile", counting)
    return full, path, decodes


def test_same_box_twice_decodes_each_tile_once(counted):
    full, path, decodes = counted
    vol = open_tiled_volume(path, threads=2)
    box = Box((1, 5, 6), (3, 17, 20))  # rows 0-2, cols 0-2 -> 9 tiles x 2 slices
    a = vol.read(box)
    b = vol.read(box)
    np.testing.assert_array_equal(a, full[box.slices()])
    np.testing.assert_array_equal(b, a)
    assert decodes.pop("thread:tile-decode") == 18  # decoded in the pool's threads
    assert len(decodes) == 18 and set(decodes.values()) == {1}
    assert vol.cache_info()["misses"] == 18 and vol.cache_info()["hits"] == 18


def test_neighbouring_boxes_share_tiles(counted):
    full, path, decodes = counted
    vol = open_tiled_volume(path, threads=2)
    vol.read(Box((0, 0, 0), (1, 12, 12)))  # tiles (0,0) (0,1) (1,0) (1,1)
    vol.read(Box((0, 4, 10), (1, 16, 26)))  # rows 0-1, cols 1-3: (0,1) (1,1) are reused
    decodes.pop("thread:tile-decode")
    assert sum(decodes.values()) == 4 + 4 and set(decodes.values()) == {1}


def test_byte_limit_is_respected_and_forces_redecode(counted):
    full, path, decodes = counted
    limit = 3 * 8 * 8  # three full tiles
    vol = open_tiled_volume(path, threads=2, cache_bytes=limit)
    for z in range(4):
        np.testing.assert_array_equal(vol.read(Box((z, 0, 0), (z + 1, 20, 27))), full[z : z + 1])
        assert vol.cache_info()["nbytes"] <= limit
    assert decodes["thread:tile-decode"] == 4 * 12
    vol.read(Box((0, 0, 0), (1, 20, 27)))  # slice 0 was evicted long ago
    assert decodes["thread:tile-decode"] == 5 * 12


def test_cache_disabled_decodes_every_time(counted):
    full, path, decodes = counted
    vol = open_tiled_volume(path, cache_bytes=0, threads=1)
    box = Box((0, 0, 0), (1, 8, 8))
    vol.read(box)
    vol.read(box)
    assert decodes["thread:MainThread"] == 2  # threads=1 decodes inline
    assert vol.cache_info()["entries"] == 0
