"""Writing files so that a crash never leaves half of one: write a temporary file beside the
target, then rename it over the target (atomic on POSIX). A write that fails (a full disk, a folder
where the file should be) is one CapslibError naming the file; the previous file is kept whole."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .errors import CapslibError

TEMPORARY_SUFFIX = ".tmp"  # what a write in progress is called: `.<name>.<random>.tmp` beside its target


@contextlib.contextmanager
def atomic_path(path: Path | str):
    """Yield a temporary path to write; on success it replaces `path`, on failure it is removed."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except OSError as err:
        kept = "; the previous file is unchanged" if path.is_file() else ""
        raise CapslibError(f"cannot write {path}: {err.strerror or err}{kept}") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def atomic_write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
