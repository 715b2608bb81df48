"""Engine factories for the blockwise tests (module level: pickled by reference to daisy workers)."""

from __future__ import annotations

import time

import numpy as np
import torch

from connectomics_data.inference import InferenceSettings, SlidingWindowInference


class SlowIdentity(torch.nn.Module):
    """Identity (1 -> 1 channel) that sleeps ``delay`` seconds per forward pass."""

    def __init__(self, delay: float = 0.0):
        super().__init__()
        self.delay = float(delay)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.delay:
            time.sleep(self.delay)
        return x


def conv_model() -> torch.nn.Module:
    """A fixed 3x3x3 convolution, 1 -> 2 channels (weights from a seeded numpy generator)."""
    conv = torch.nn.Conv3d(1, 2, 3, padding=1)
    rng = np.random.default_rng(7)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(rng.normal(0, 0.3, conv.weight.shape).astype(np.float32)))
        conv.bias.copy_(torch.tensor([0.1, -0.2]))
    return conv.eval()


def identity_engine(device, settings: InferenceSettings, delay: float = 0.0) -> SlidingWindowInference:
    return SlidingWindowInference(SlowIdentity(delay), settings, device=device)


def conv_engine(device, settings: InferenceSettings) -> SlidingWindowInference:
    return SlidingWindowInference(conv_model().to(device), settings, activation=torch.sigmoid, device=device)


IDENTITY_SETTINGS = InferenceSettings((4, 16, 16), (3, 8, 8), pad=(2, 5, 5), batch_size=4, output_dtype="uint8",
                                      prefetch=False)
BLOCK = (8, 16, 16)  # = the output chunks: 27 blocks over (21, 40, 37)


def run_identity(volume_path: str, output: str, workers: int, delay: float = 0.0):
    """The identity-model blockwise run of the restart test (also run as a killed subprocess)."""
    import functools

    from connectomics_data.inference.blockwise import predict_blockwise
    from connectomics_data.io import open_volume
    from connectomics_data.normalize import ImageNormalizer

    factory = functools.partial(identity_engine, settings=IDENTITY_SETTINGS, delay=delay)
    return predict_blockwise(factory, IDENTITY_SETTINGS, [open_volume(volume_path)], output, channels=1,
                             normalizer_fn=lambda v: ImageNormalizer(), workers=workers, block_shape=BLOCK,
                             chunks=BLOCK, threads=1, device="cpu", progress=False, host="127.0.0.1")
