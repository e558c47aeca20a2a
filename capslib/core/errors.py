"""The one error type users see.

Anything the user can fix (a bad flag, a missing folder, a corrupt file, a run folder that
already holds a run) raises :class:`CapslibError` with a message that names the flag or file.
The command line prints it as one line and exits with status 2, without a traceback.
"""


class CapslibError(Exception):
    """A problem with the user's input, explained in one line."""


class DataError(CapslibError):
    """An IDX file or dataset folder that cannot be used."""


class RunFolderError(CapslibError):
    """A run folder or checkpoint that does not fit the request."""


class TrainingDiverged(CapslibError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
