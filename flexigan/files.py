"""Writing the files a command leaves behind, so that a reader never sees half of one.

A file is written under a temporary name in its own folder and renamed over its place only once
it is complete (a rename within a folder is atomic): an error or Ctrl-C leaves the old file, or
none, never a truncated one.
"""

import contextlib
import json
import os
import tempfile
from pathlib import Path

from .errors import UsageError

__all__ = ["atomic_file", "write_json_atomic", "umask"]


def umask():
    """The process's umask: the temporary files and folders this module makes are private
    (0600, 0700); what they become gets the permissions a plain ``open`` would give it."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path, mode="wb"):
    """An open file that becomes ``path`` when the ``with`` block ends without an exception.

    Raises :class:`UsageError` (one line) when the place cannot be written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(mode, dir=path.parent, prefix=f".{path.name}.",
                                             suffix=".tmp", delete=False)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with handle:
            yield handle
        os.chmod(handle.name, 0o666 & ~umask())
        os.replace(handle.name, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)
        if isinstance(exc, OSError):
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def write_json_atomic(path, document):
    """Write ``document`` as JSON to ``path`` through a temporary file in the same folder."""
    with atomic_file(path, "w") as f:
        f.write(json.dumps(document, indent=1) + "\n")
