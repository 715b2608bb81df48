"""The validation picture: one section of the first validation volume, readable for thin
structures such as membranes.

Four panels side by side under a caption line (``iteration 300   dice 0.6850   iou 0.5209``):

1. ground truth: the raw section with the label outlined in green, blended at half strength so
   the image stays visible under a structure only a few pixels wide;
2. prediction: the same with the prediction (> 0.5) outlined in magenta;
3. probability: the foreground probability of channel 0 as a dark-to-bright colour ramp
   (black 0, purple, orange, yellow 1);
4. errors: the raw section dimmed, true positives green, false positives red (predicted, not
   in the label), false negatives blue (in the label, missed).
"""

from __future__ import annotations

import numpy as np

#: colours of the error panel (RGB)
TP, FP, FN = (0, 200, 0), (255, 40, 40), (40, 120, 255)
GT_OUTLINE, PRED_OUTLINE = (0, 255, 0), (255, 0, 255)
#: anchors of the probability ramp: value -> RGB
_RAMP_AT = np.array([0.0, 0.35, 0.7, 1.0])
_RAMP_RGB = np.array([[0, 0, 0], [120, 28, 160], [245, 120, 40], [252, 252, 140]], dtype=np.float64)
CAPTION_HEIGHT = 16


def _outline(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_erosion

    return mask & ~binary_erosion(mask)


def _gray(section: np.ndarray) -> np.ndarray:
    """(y, x) any dtype -> (y, x, 3) uint8, min-max scaled."""
    img = section.astype(np.float32)
    lo, hi = float(img.min()), float(img.max())
    gray = ((img - lo) / max(hi - lo, 1e-6) * 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def _blend(rgb: np.ndarray, where: np.ndarray, colour, alpha: float = 0.5) -> np.ndarray:
    out = rgb.copy()
    out[where] = (rgb[where] * (1 - alpha) + np.asarray(colour) * alpha).astype(np.uint8)
    return out


def probability_rgb(prob: np.ndarray) -> np.ndarray:
    """(y, x) probabilities in [0, 1] -> (y, x, 3) uint8 on the ramp (monotonic brightness)."""
    p = np.clip(np.nan_to_num(prob.astype(np.float64)), 0.0, 1.0)
    return np.stack([np.interp(p, _RAMP_AT, _RAMP_RGB[:, c]) for c in range(3)], axis=-1).astype(np.uint8)


def error_rgb(section: np.ndarray, label: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(y, x, 3) uint8: the section at half brightness, TP green, FP red, FN blue."""
    out = _gray(section) // 2
    out[label & pred] = TP
    out[pred & ~label] = FP
    out[label & ~pred] = FN
    return out


def validation_panels(image: np.ndarray, label: np.ndarray, prob: np.ndarray, z: int) -> np.ndarray:
    """(y, 4x, 3) uint8 panels of section ``z``.

    Args:
        image: (z, y, x) or (c, z, y, x) raw validation image (channel 0 shown).
        label: (z, y, x) ground truth (foreground > 0).
        prob: (C, z, y, x) probabilities (channel 0 shown, foreground > 0.5).
    """
    raw = image[0] if image.ndim == 4 else image
    section, gt, p = raw[z], label[z] > 0, prob[0, z]
    pred = p > 0.5
    gray = _gray(section)
    return np.concatenate([
        _blend(gray, _outline(gt), GT_OUTLINE),
        _blend(gray, _outline(pred), PRED_OUTLINE),
        probability_rgb(p),
        error_rgb(section, gt, pred),
    ], axis=1)


def caption_text(iteration: int | None, dice: float, iou: float, z: int) -> str:
    head = f"iteration {iteration}   " if iteration is not None else ""
    return (f"{head}dice {dice:.4f}   iou {iou:.4f}   section z={z}   |   label (green)   "
            "prediction (magenta)   probability   TP green / FP red / FN blue")


def validation_figure(panels: np.ndarray, caption: str) -> np.ndarray:
    """``panels`` (y, w, 3) uint8 under a caption strip: (CAPTION_HEIGHT + y, w, 3) uint8."""
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (panels.shape[1], CAPTION_HEIGHT), (255, 255, 255))
    ImageDraw.Draw(strip).text((4, 2), caption, fill=(0, 0, 0))
    return np.concatenate([np.asarray(strip), panels], axis=0)


def validation_file_name(iteration: int, dice: float) -> str:
    """``validation_it000300_dice0.6850.png``: one file per validation, sorted by iteration."""
    return f"validation_it{int(iteration):06d}_dice{dice:.4f}.png"


__all__ = ["CAPTION_HEIGHT", "FN", "FP", "TP", "caption_text", "error_rgb", "probability_rgb",
           "validation_figure", "validation_file_name", "validation_panels"]
