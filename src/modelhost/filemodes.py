"""Files and folders modelhost creates are private to the user it runs as: 0600 and 0700.

Explicit modes cover what modelhost writes itself (artifacts, logs, the CLI profile); the
umask covers what libraries create on its behalf (the SQLite database and its WAL and shm
files, upload spools, temp folders). Every process entry point calls :func:`restrict_umask`
first; child processes (training workers) inherit it.
"""

from __future__ import annotations

import os

PRIVATE_UMASK = 0o077
FILE_MODE = 0o600
FOLDER_MODE = 0o700


def restrict_umask() -> int:
    """Make new files 0600 and new folders 0700 (at most) in this process; return the old umask."""
    return os.umask(PRIVATE_UMASK)
