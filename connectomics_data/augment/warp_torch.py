"""The fused warp on torch tensors (CPU or CUDA, batched): the same map, another backend.

A dataset can ship each sample's map instead of warping on the CPU (``WarpPlan.coordinates``)
and warp the whole batch on the GPU after the host-to-device copy:

* 'img': ``torch.nn.functional.grid_sample`` (bilinear, ``align_corners=True``) per output slice
  on the slice ``z_index`` selects; float32 out (integer inputs are converted, times ``scale``).
* 'mask': integer gather of the nearest voxel, ``floor(coord + 1/2)`` in float32, exactly the
  voxels the numpy path picks (the map is quantised so both round alike); any dtype, values
  copied bit for bit (unsigned types are gathered through the signed type of the same width).

torch is imported lazily, so the numpy path never needs it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .plan import WarpPlan

_SIGNED = {"torch.uint16": "int16", "torch.uint32": "int32", "torch.uint64": "int64"}


def warp_batch_torch(volume: Any, z_index: Any, coords: Any, kind: str, scale: float = 1.0) -> Any:
    """Warp a batch.

    Args:
        volume: ``(B, C, Sz, Sy, Sx)`` tensor.
        z_index: ``(B, Z)`` int64 tensor, sample slice per output slice.
        coords: ``(B, Z, Y, X, 2)`` float32 tensor, sample ``(y, x)`` per output voxel; every
            coordinate must lie in ``[0, S - 1]`` (what ``Compose.sample_size`` guarantees).
        kind: 'img' (bilinear, float32 out) or 'mask' (nearest gather, dtype kept).
        scale: multiplies 'img' output (e.g. ``1/255`` for uint8).

    Returns:
        ``(B, C, Z, Y, X)`` tensor on ``volume``'s device.
    """
    import torch
    import torch.nn.functional as F

    B, C, Sz, Sy, Sx = volume.shape
    _, Z, Y, X, _ = coords.shape
    z_index = z_index.to(device=volume.device, dtype=torch.long)
    coords = coords.to(device=volume.device, dtype=torch.float32)
    if kind == "img":
        vol = volume if volume.dtype in (torch.float32, torch.float64) else volume.float()
        batch = torch.arange(B, device=volume.device)[:, None]
        slices = vol[batch, :, z_index]  # (B, Z, C, Sy, Sx)
        inp = slices.reshape(B * Z, C, Sy, Sx)
        gx = coords[..., 1] * (2.0 / max(Sx - 1, 1)) - 1.0
        gy = coords[..., 0] * (2.0 / max(Sy - 1, 1)) - 1.0
        grid = torch.stack((gx, gy), dim=-1).reshape(B * Z, Y, X, 2).to(inp.dtype)
        out = F.grid_sample(inp, grid, mode="bilinear", padding_mode="border", align_corners=True)
        out = out.reshape(B, Z, C, Y, X).transpose(1, 2).to(torch.float32)
        if scale != 1.0:
            out = out * scale
        return out.contiguous()
    if kind != "mask":
        raise ValueError(f"kind must be 'img' or 'mask', got {kind!r}")
    iy = torch.floor(coords[..., 0] + 0.5).long().clamp_(0, Sy - 1)
    ix = torch.floor(coords[..., 1] + 0.5).long().clamp_(0, Sx - 1)
    flat_idx = (z_index[:, :, None, None] * Sy + iy) * Sx + ix  # (B, Z, Y, X)
    signed = _SIGNED.get(str(volume.dtype))
    vol = volume.view(getattr(torch, signed)) if signed else volume
    src = vol.reshape(B, C, Sz * Sy * Sx)
    out = torch.gather(src, 2, flat_idx.reshape(B, 1, -1).expand(B, C, -1))
    out = out.reshape(B, C, Z, Y, X)
    return out.view(volume.dtype) if signed else out


def warp_plan_torch(
    volume: Any, plan: WarpPlan, kind: str, scale: float = 1.0, device: Any = None
) -> Any:
    """Warp one ``(Sz, Sy, Sx)`` or ``(C, Sz, Sy, Sx)`` array or tensor with ``plan`` on
    ``device`` (default: the tensor's, or CPU). Returns a tensor shaped like the numpy path's
    output (the z-x transpose is not applied, as there)."""
    import torch

    vol = (
        torch.from_numpy(np.ascontiguousarray(volume)) if isinstance(volume, np.ndarray) else volume
    )
    if device is not None:
        vol = vol.to(device)
    squeeze = vol.dim() == 3
    vol5 = vol[None, None] if squeeze else vol[None]
    z_index, coords = plan.coordinates()
    out = warp_batch_torch(
        vol5, torch.from_numpy(z_index)[None], torch.from_numpy(coords)[None], kind, scale
    )
    return out[0, 0] if squeeze else out[0]
