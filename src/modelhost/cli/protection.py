"""Data protection: encryption keys at rest, backups and restores.

Like ``worker``, these are roles on the platform's own stores, not calls to the server: they
read the same settings (``MODELHOST_HOME``, ``MODELHOST_DATABASE_URL``, ``MODELHOST_ARTIFACTS_URL``,
the encryption keys) and may run while the server serves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelhost.cli.output import console, err_console, show_json, show_table
from modelhost.config import load_settings
from modelhost.errors import StorageError

encryption = typer.Typer(help="Encryption of artifacts at rest.", no_args_is_help=True)


@encryption.command("generate-key")
def generate_key() -> None:
    """Print a new random key (32 bytes, URL-safe base64) for MODELHOST_ENCRYPTION_KEY or a key file."""
    from modelhost.artifacts.keyring import generate_key as new_key

    typer.echo(new_key())


@encryption.command("status")
def status(
    json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """How many artifacts are under which key (current, old, not configured) or in the clear."""
    from dataclasses import asdict

    from modelhost.artifacts import open_store
    from modelhost.artifacts.rotation import census

    rows = [asdict(r) for r in census(open_store(load_settings()))]
    if json:
        show_json(rows)
    else:
        show_table(rows, ["key_id", "role", "objects"], title="artifacts by encryption key")


@encryption.command("rotate")
def rotate(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print every object's outcome.")] = False,
) -> None:
    """Re-encrypt every artifact under the current key, one atomic write per object, while the
    server keeps serving. With MODELHOST_ENCRYPTION_KEY_FILE nothing restarts: put the new key
    on the file's first line and the old one after it (running servers and workers read the file
    again when it changes), run this, then delete the old line. With MODELHOST_ENCRYPTION_KEY,
    restart every server and worker with the new key there and the old one in
    MODELHOST_ENCRYPTION_OLD_KEYS first. Drop the old key once `modelhost encryption status`
    shows nothing under it."""
    from modelhost.artifacts import open_store
    from modelhost.artifacts.rotation import rotate as rotate_all

    def progress(key: str, outcome: str) -> None:
        if verbose:
            console.print(f"{outcome:>9}  {key}", highlight=False)

    result = rotate_all(open_store(load_settings()), progress)
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(result.counts.items()))
    console.print(f"rotation done: {counts}", highlight=False)
    if result.failed:
        for key, why in result.failed.items():
            err_console.print(f"  {key}: {why}", highlight=False, soft_wrap=True)
        raise StorageError(f"{len(result.failed)} artifact(s) could not be rotated (listed above)")


def backup(
    path: Annotated[Path, typer.Argument(help="A new (or empty) folder for the backup.")],
) -> None:
    """Back up metadata and artifacts while the server runs (SQLite online backup or pg_dump,
    then the artifacts as stored). Encrypted artifacts stay encrypted: keep the key safe,
    apart from the backup; restoring needs it."""
    from modelhost.backup import backup as take_backup

    done = take_backup(load_settings(), path)
    size = f"{done.bytes / 1e6:.1f} MB"
    console.print(
        f"backup of {done.database} metadata and {done.artifacts} artifacts ({size}) in {done.path}"
    )
    if done.key_ids:
        console.print(
            f"artifacts are encrypted with key id(s) {', '.join(done.key_ids)}: restoring needs them"
        )


def restore(
    path: Annotated[Path, typer.Argument(help="A folder written by `modelhost backup`.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace a database and artifact store that are not empty.")
    ] = False,
) -> None:
    """Restore a backup into the home, database and artifact store the settings name: a fresh
    (empty) one, unless --force. Stop any server on the target first."""
    from modelhost.backup import restore as run_restore

    done = run_restore(load_settings(), path, force=force)
    console.print(f"restored {done.database} metadata and {done.artifacts} artifacts")
    if done.missing_keys:
        err_console.print(
            f"warning: artifacts are encrypted with key id(s) {', '.join(done.missing_keys)}, which the "
            "settings do not configure: set MODELHOST_ENCRYPTION_KEY (or the key file) before starting",
            highlight=False,
            soft_wrap=True,
        )
