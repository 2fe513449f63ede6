"""Exceptions the suite raises on bad input; the CLI prints them as one line and exits non-zero."""


class SlideError(Exception):
    """Base class for errors reported to the user without a traceback."""


class DatasetFormatError(SlideError):
    """A data file breaks the XC format; the message names the file and the line."""

    def __init__(self, path, line, message):
        self.path = str(path)
        self.line = line
        self.reason = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class ConfigError(SlideError):
    """A hyperparameter, preset or command-line value is invalid."""


class FetchError(SlideError):
    """A dataset could not be downloaded, extracted or verified."""


class ResourceError(SlideError):
    """The machine (or a configured limit) cannot hold what was asked for."""


class DivergenceError(SlideError):
    """Training produced a NaN or infinite loss."""


class ConfigWarning(UserWarning):
    """A setting was adjusted to keep its meaning (e.g. SLIDE's padding cap); the run goes on."""
