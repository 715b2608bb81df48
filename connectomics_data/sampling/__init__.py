"""Where samples come from: seeded streams, volume and position choice, rejection and screening."""

from .positions import PositionSampler, crop_counts

# ``.screen`` (the module) must be imported before ``.reject``'s ``screen`` (the function):
# importing a submodule binds its name on the package, which would shadow the function.
# isort: off
from .screen import BlockCountTable, source_extent
from .reject import Coins, RejectionPolicy, SamplingStats, Verdict, judge, screen
# isort: on
from .seeding import STREAM_AUGMENT, STREAM_POSITION, sample_rng

__all__ = [
    "STREAM_AUGMENT",
    "STREAM_POSITION",
    "BlockCountTable",
    "Coins",
    "PositionSampler",
    "RejectionPolicy",
    "SamplingStats",
    "Verdict",
    "crop_counts",
    "judge",
    "sample_rng",
    "screen",
    "source_extent",
]
