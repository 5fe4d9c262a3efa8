"""Encryption keys for artifacts at rest: parsed from settings, told apart by a short key id.

A key is 32 random bytes (AES-256), written as base64 (standard or URL-safe alphabet,
padding optional). The *current* key encrypts every new object; *old* keys only decrypt
what was written before a rotation. Sources, all optional:

- ``MODELHOST_ENCRYPTION_KEY``: the current key;
- ``MODELHOST_ENCRYPTION_KEY_FILE``: a file, one key a line (``#`` comments and blank lines
  skipped), the first line current and the rest old; it must not be readable by group or others;
- ``MODELHOST_ENCRYPTION_OLD_KEYS``: old keys, comma-separated.

A key file is read again whenever it changes (:class:`KeyFile`), so a rotation needs no restart:
write the new key as the first line with the old ones after it, run ``modelhost encryption
rotate``, then drop the old lines. Keys from the environment are fixed for the process's life.

Old keys without a current one is a valid keyring too: new objects are then stored in the
clear, and ``modelhost encryption rotate`` decrypts the rest (how encryption is turned off).
Error messages name the setting and the problem, never a key's bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import secrets
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from modelhost.errors import InvalidInput

if TYPE_CHECKING:
    from modelhost.config import Settings

log = logging.getLogger("modelhost.artifacts")

KEY_BYTES = 32
KEY_ID_BYTES = 8
_ID_CONTEXT = b"modelhost artifact key id\x00"
_FIX = "generate one with `modelhost encryption generate-key`"


@dataclass(frozen=True, repr=False)
class EncryptionKey:
    """One AES-256 key and its id: the first 8 bytes of a domain-separated sha256 of it."""

    secret: bytes

    @property
    def id(self) -> bytes:
        return hashlib.sha256(_ID_CONTEXT + self.secret).digest()[:KEY_ID_BYTES]

    @property
    def hex_id(self) -> str:
        return self.id.hex()

    def __repr__(self) -> str:  # never print the secret, even in a traceback
        return f"EncryptionKey(id={self.hex_id})"


@dataclass(frozen=True)
class Keyring:
    """The key new objects are encrypted with (None: written in the clear) and every key that decrypts."""

    current: EncryptionKey | None
    old: tuple[EncryptionKey, ...] = ()
    by_id: dict[bytes, EncryptionKey] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        keys = ([self.current] if self.current else []) + list(self.old)
        object.__setattr__(self, "by_id", {k.id: k for k in keys})

    def find(self, key_id: bytes) -> EncryptionKey | None:
        return self.by_id.get(key_id)


def generate_key() -> str:
    """A new random key, URL-safe base64 (44 characters)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def parse_key(text: str, where: str) -> EncryptionKey:
    """Decode one base64 key; InvalidInput naming ``where`` unless it is exactly 32 bytes."""
    s = text.strip().replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidInput(f"{where} is not valid base64; {_FIX}") from e
    if len(raw) != KEY_BYTES:
        raise InvalidInput(f"{where} decodes to {len(raw)} bytes; AES-256-GCM needs exactly 32: {_FIX}")
    return EncryptionKey(raw)


def read_key_file(path: Path) -> list[EncryptionKey]:
    """The keys in ``path``, first line first; refused if group or others may read it."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text()
    except FileNotFoundError as e:
        raise InvalidInput(f"MODELHOST_ENCRYPTION_KEY_FILE {str(path)!r} does not exist") from e
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"MODELHOST_ENCRYPTION_KEY_FILE {str(path)!r} cannot be read: {e}") from e
    if mode & 0o077:
        raise InvalidInput(
            f"MODELHOST_ENCRYPTION_KEY_FILE {str(path)!r} is readable by group or others "
            f"(mode {mode:04o}); run: chmod 600 {path}"
        )
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)]
    keys = [parse_key(k, f"line {n} of {str(path)!r}") for n, k in lines if k and not k.startswith("#")]
    if not keys:
        raise InvalidInput(f"MODELHOST_ENCRYPTION_KEY_FILE {str(path)!r} holds no key; {_FIX}")
    return keys


def keyring_from_settings(settings: Settings) -> Keyring | None:
    """The configured keyring, or None when no key is configured at all (artifacts in the clear)."""
    if settings.encryption_key is not None and settings.encryption_key_file is not None:
        raise InvalidInput("set MODELHOST_ENCRYPTION_KEY or MODELHOST_ENCRYPTION_KEY_FILE, not both")
    current: EncryptionKey | None = None
    old: list[EncryptionKey] = []
    if settings.encryption_key is not None:
        current = parse_key(settings.encryption_key.get_secret_value(), "MODELHOST_ENCRYPTION_KEY")
    elif settings.encryption_key_file is not None:
        current, *old = read_key_file(settings.encryption_key_file)
    if settings.encryption_old_keys is not None:
        parts = [p for p in settings.encryption_old_keys.get_secret_value().split(",") if p.strip()]
        old += [parse_key(p, f"key {i} of MODELHOST_ENCRYPTION_OLD_KEYS") for i, p in enumerate(parts, 1)]
    if current is None and not old:
        return None
    return Keyring(current, tuple(k for k in old if current is None or k.id != current.id))


class KeyFile:
    """The keyring of the settings, read again when ``MODELHOST_ENCRYPTION_KEY_FILE`` changes
    (its modification time, size or inode; one ``stat`` per use). A file that no longer reads
    as a keyring (half written, bad mode) keeps the last good keys in use and logs why, so a
    mistake while rotating never stops reads; the first read raises InvalidInput as usual."""

    def __init__(self, settings: Settings) -> None:
        assert settings.encryption_key_file is not None
        self._settings, self._path = settings, settings.encryption_key_file
        self._lock = threading.Lock()
        self._stamp = self._stat()
        ring = keyring_from_settings(settings)
        assert ring is not None  # a key file holds at least one key, or the read raised
        self._ring = ring

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self._path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def __call__(self) -> Keyring:
        stamp = self._stat()
        if stamp is None or stamp == self._stamp:
            return self._ring
        with self._lock:
            if stamp != self._stamp:
                try:
                    ring = keyring_from_settings(self._settings)
                except InvalidInput as e:
                    log.error("encryption keys not reloaded, the last good ones stay in use: %s", e)
                else:
                    assert ring is not None
                    self._ring = ring
                    log.info("encryption keys reloaded from %s", self._path)
                self._stamp = stamp
        return self._ring
