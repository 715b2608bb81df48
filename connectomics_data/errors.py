"""The project's own exception types.

Every error raised for bad user input derives from :class:`ConnectomicsDataError`, and also
from the matching builtin (``ValueError``, ``FileNotFoundError``, ``KeyError``) so callers that
catch builtins keep working.
"""

from __future__ import annotations


class ConnectomicsDataError(Exception):
    """Base class for every error this package raises about user input."""


class ConfigError(ConnectomicsDataError, ValueError):
    """A config key, value or file is invalid; the message names the key and the file."""


class ConfigKeyError(ConfigError, KeyError):
    """A config key does not exist; the message suggests the closest valid spelling."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class VolumeError(ConnectomicsDataError, ValueError):
    """A volume file is corrupt, has the wrong shape or dtype; the message names the file."""


class VolumeNotFoundError(ConnectomicsDataError, FileNotFoundError):
    """A volume file (or a dataset inside it) is missing; the message names the path."""


class TileJSONError(ConnectomicsDataError, ValueError):
    """A tile JSON is malformed or refers to missing or mis-sized tiles."""


class SamplingError(ConnectomicsDataError, RuntimeError):
    """Rejection sampling exhausted its trials; the message names volume, position and counts."""


class CheckpointError(ConnectomicsDataError, ValueError):
    """A checkpoint is missing, truncated or from another architecture."""


class OutputError(ConnectomicsDataError, OSError):
    """An output cannot be written (path not writable, disk full, foreign file in the way)."""
