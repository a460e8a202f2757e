"""Temporary files beside the file they will replace, named after their process so that strays can be found.

Checkpoints and downloads are written to a temporary file in the target's
folder and renamed over the target only once complete. A process killed
outright (``kill -9``, a power cut) cannot remove its temporary file; the
next write into that folder removes those whose process no longer exists.
"""

import os
import re
import tempfile

_TEMP = re.compile(r"^\.minivae-(\d+)-[^/]*\.tmp$")  # a temporary file, named after its process


def make_temporary(folder):
    """A new temporary file in ``folder``: ``(fd, path)``, as ``tempfile.mkstemp`` returns them."""
    return tempfile.mkstemp(dir=folder, prefix=f".minivae-{os.getpid()}-", suffix=".tmp")


def remove_abandoned(folder):
    """Delete the temporary files in ``folder`` whose process no longer exists (POSIX only)."""
    if os.name != "posix":
        return
    for entry in os.scandir(folder):
        match = _TEMP.match(entry.name)
        if not match or int(match.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(match.group(1)), 0)  # signal 0 only asks whether the process exists
        except ProcessLookupError:
            try:
                os.remove(entry.path)
            except OSError:
                pass
        except (PermissionError, OverflowError):  # another user's live process, or no such pid at all
            pass
