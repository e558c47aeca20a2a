"""The one error type users see.

Anything the user can fix (a bad flag, a missing folder, a corrupt file, a run folder that
already holds a run) raises :class:`CapslibError` with a message that names the flag or file.
The command line prints it as one line and exits with status 2, without a traceback.

A process stopped from outside (SIGTERM: `kill`, Slurm's scancel, a sweep stopping its runs) raises
:class:`Terminated`, a KeyboardInterrupt, once `raise_on_sigterm` is called: a run ends as Ctrl-C
ends it, its last checkpoint kept and its run.json saying 'interrupted'.
"""

import os
import signal
import sys
import threading


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
    if not getattr(sys.unraisablehook, "stops_later", False):
        sys.unraisablehook = _stop_later(sys.unraisablehook)
    return signal.signal(signal.SIGTERM, _terminated)


STOP_AGAIN_SECONDS = 0.05


def _stop_later(hook):
    """sys.unraisablehook for a stop that landed in a finalizer. Python runs a signal's handler between any
    two bytecodes, also those of a __del__ or a weakref callback (torch._dynamo has many, and runs them
    while it compiles the first epoch); an exception cannot leave a finalizer, so Python printed "Exception
    ignored in ... Traceback ... Terminated" and carried on as if never stopped. Instead: no word, and the
    same signal again, a moment later, from another thread: its handler then runs outside the finalizer,
    where the stop ends the run as it should. Every other unraisable exception goes to the hook there was."""
    def handle(unraisable):
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            return hook(unraisable)
        signum = signal.SIGTERM if isinstance(unraisable.exc_value, Terminated) else signal.SIGINT
        # a moment later: by then this hook (and the finalizer it reports) has returned
        again = threading.Timer(STOP_AGAIN_SECONDS, os.kill, (os.getpid(), signum))
        again.daemon = True
        again.start()

    handle.stops_later = True
    return handle
