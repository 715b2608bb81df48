"""The top-level API: every advertised name resolves, and importing the package stays cheap."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import connectomics_data as cd

HEAVY = ("torch", "numpy", "scipy", "h5py", "zarr", "tensorstore", "lightning", "edt", "PIL")


def run_python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_import_loads_no_heavy_module():
    code = ("import sys, json, connectomics_data; "
            f"print(json.dumps([m for m in sys.modules if m.split('.')[0] in {list(HEAVY)!r}]))")
    assert json.loads(run_python(code)) == []


def test_import_time_is_small():
    """``python -X importtime``: the package itself (cumulative) costs milliseconds, not the
    seconds torch takes. The bound is loose for a loaded machine."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import connectomics_data"],
                          capture_output=True, text=True, timeout=120)
    line = [ln for ln in proc.stderr.splitlines() if ln.rstrip().endswith("| connectomics_data")]
    assert len(line) == 1, proc.stderr[-2000:]
    cumulative_us = int(line[0].split("|")[1])
    assert cumulative_us < 300_000, line[0]


def test_box_needs_no_torch():
    code = "import sys, connectomics_data as cd; cd.Box; print('torch' in sys.modules)"
    assert run_python(code).strip() == "False"


@pytest.mark.parametrize("name", sorted(cd._LAZY))
def test_every_name_is_the_subpackage_object(name):
    module = importlib.import_module(f"connectomics_data.{cd._LAZY[name]}")
    assert getattr(cd, name) is getattr(module, name)
    assert name in cd.__all__ and name in dir(cd)


def test_from_import_and_unknown_names():
    from connectomics_data import Batch, build_dataloader, load_cfg  # noqa: F401

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        cd.nope  # noqa: B018
    assert cd.__version__ == "0.1.0"


def test_issue_names_are_exported():
    wanted = {"load_cfg", "get_cfg_defaults", "open_volume", "Box", "Compose", "VolumeDataset",
              "TileDataset", "build_dataset", "build_dataloader", "Batch", "DevicePrefetcher",
              "Rotate", "Elastic", "Flip"}
    assert wanted <= set(cd.__all__)


def test_all_lists_exactly_the_lazy_names():
    assert cd.__all__ == sorted(cd._LAZY) + ["__version__"]


def test_lightning_module_without_lightning_says_how_to_install():
    code = ("import sys\n"
            "for name in ('lightning', 'lightning.pytorch', 'pytorch_lightning'):\n"
            "    sys.modules[name] = None\n"
            "try:\n"
            "    import connectomics_data.lightning\n"
            "except ImportError as err:\n"
            "    print(err)\n")
    out = run_python(code)
    assert "pip install 'connectomics_data[lightning]'" in out


def test_subpackages_are_attributes():
    code = ("import connectomics_data as cd; "
            "print(cd.targets.parse_targets is __import__('connectomics_data.targets').targets.parse_targets, "
            "cd.geometry.Box is cd.Box)")
    assert run_python(code).split() == ["True", "True"]
