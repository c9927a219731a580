"""The error types of pexp, at the bottom of its layers: data sets, models and the config checks all raise them,
and every entry point turns them into one line and exit status 2."""


class ConfigError(ValueError):
    """A config value that is not allowed."""


class DataError(RuntimeError):
    """Data that cannot be found, read or verified."""
