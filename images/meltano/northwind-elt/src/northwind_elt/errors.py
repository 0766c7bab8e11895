"""The exceptions of the pipeline: one root, so callers can catch everything we raise."""


class PipelineError(Exception):
    """Root of every error the pipeline raises on purpose (bad input, bad settings, bad state)."""


class SettingError(PipelineError):
    """A setting (environment variable or plugin config) is missing or malformed."""


class InputError(PipelineError):
    """Source data is malformed; the message names the file or table, line and column."""


class PartitionError(PipelineError):
    """A partition of the data tree is missing, incomplete or corrupt."""


class PrerequisiteError(PipelineError):
    """A step was asked to run before the steps it depends on succeeded for that date."""
