"""Error types that name the offending file or field and say how to fix it."""


class ToolkitError(Exception):
    """Base class: every message names what is wrong and the fix."""


class DataError(ToolkitError, ValueError):
    """Bad or missing data: a file, a metadata field, a fold list."""


class AudioError(DataError):
    """An audio file that cannot be used (missing, corrupt, empty, NaN)."""


class DataNotFoundError(DataError, FileNotFoundError):
    """The data set is not where it should be and cannot be downloaded."""


class IntegrityError(DataError):
    """A download or archive failed verification (hash, unsafe member)."""


class CheckpointError(ToolkitError, RuntimeError):
    """A checkpoint is missing or does not fit the model it is loaded into."""


class CheckpointNotFoundError(CheckpointError):
    """A local checkpoint path or recipe save folder that does not exist or holds no checkpoint yet."""


class HubUnavailableError(ToolkitError, OSError):
    """A hub id was requested but cannot be fetched (offline or unknown)."""


class ConfigError(ToolkitError, ValueError):
    """An hparams value that names nothing known or is out of range (the message lists the valid choices)."""
