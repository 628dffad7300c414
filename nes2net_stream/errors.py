"""Error types raised by nes2net-stream.

Every error a user can cause (bad audio, a bad model bundle, bad configuration) derives from
:class:`Nes2NetError`, so the command line can print one clear line instead of a traceback.
"""

from __future__ import annotations


class Nes2NetError(Exception):
    """Base class of all user-facing errors."""


class AudioError(Nes2NetError):
    """Audio that cannot be read, decoded or scored (empty, silent, NaN, unsupported)."""


class BundleError(Nes2NetError):
    """A model bundle that is missing, corrupt or incompatible with this version."""


class ConfigError(Nes2NetError):
    """Invalid configuration; the message names the offending key."""


class DependencyError(Nes2NetError):
    """A required external program or optional package is not installed."""


class DataError(Nes2NetError):
    """A corpus, protocol or score file that is malformed or inconsistent."""
