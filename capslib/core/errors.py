"""The one error type users see.

Anything the user can fix (a bad flag, a missing folder, a corrupt file, a run folder that
already holds a run) raises :class:`CapslibError` with a message that names the flag or file.
The command line prints it as one line and exits with status 2, without a traceback.

A process stopped from outside (SIGTERM: `kill`, Slurm's scancel, a sweep stopping its runs) raises
:class:`Terminated`, a KeyboardInterrupt, once `raise_on_sigterm` is called: a run ends as Ctrl-C
ends it, its last checkpoint kept and its run.json saying 'interrupted'.
"""

import signal


class CapslibError(Exception):
    """A problem with the user's input, explained in one line."""


class DataError(CapslibError):
    """An IDX file or dataset folder that cannot be used."""


class RunFolderError(CapslibError):
    """A run folder or checkpoint that does not fit the request."""


class TrainingDiverged(CapslibError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt (see the module doc)."""


def _terminated(signum, frame):
    raise Terminated(f"signal {signal.Signals(signum).name}")


def raise_on_sigterm():
    """From now on SIGTERM raises Terminated in this process (whose main thread must call this);
    returns the handler it replaces, for signal.signal to restore."""
    return signal.signal(signal.SIGTERM, _terminated)
