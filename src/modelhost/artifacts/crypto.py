"""The at-rest format of an encrypted artifact: a header, then AES-256-GCM sealed chunks.

::

    header  = MAGIC (8) | VERSION (1) | key id (8) | salt (16)
    chunk i = AES-GCM(object key, nonce_i, plaintext_i, aad_i)        # 1 MiB + 16-byte tag

    object key = HKDF-SHA256(master key, salt, info="modelhost artifact v1")
    nonce_i    = i (11 bytes, big-endian) | final (1 byte)
    aad_i      = header | artifact key | i (8 bytes) | final (1 byte)

Each object gets its own key from a random 16-byte salt, so the counter nonces never repeat
under one AES key, however many objects a master key encrypts (the construction of Tink's
streaming AEAD). Every plaintext chunk but the last is exactly ``CHUNK_SIZE`` bytes; the last
(possibly empty) one is sealed with the final flag set, so cutting the object at a chunk
boundary, dropping, reordering or appending chunks all fail authentication. The artifact
key in the associated data makes an object copied under another key fail too, and the
header is authenticated with every chunk. Any such failure is ArtifactCorrupted.

Plaintext objects (written before encryption was turned on) do not start with ``MAGIC``
and are read as they are.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from modelhost.artifacts.base import CHUNK_SIZE
from modelhost.artifacts.keyring import KEY_ID_BYTES, EncryptionKey, Keyring
from modelhost.errors import ArtifactCorrupted, StorageError

MAGIC = b"\x89MHE\r\n\x1a\n"  # PNG-style: a high byte, CR LF, ^Z: no text file starts like this
VERSION = 1
SALT_BYTES = 16
TAG_BYTES = 16
HEADER_SIZE = len(MAGIC) + 1 + KEY_ID_BYTES + SALT_BYTES
SEALED_CHUNK = CHUNK_SIZE + TAG_BYTES
_INFO = b"modelhost artifact v1"


@dataclass(frozen=True)
class Header:
    key_id: bytes
    salt: bytes

    def to_bytes(self) -> bytes:
        return MAGIC + bytes([VERSION]) + self.key_id + self.salt


def parse_header(key: str, head: bytes) -> Header | None:
    """The header at the start of an object, or None when the object is plaintext."""
    if not head.startswith(MAGIC):
        return None
    if len(head) < HEADER_SIZE:
        raise ArtifactCorrupted(f"artifact {key!r} is cut short inside its encryption header")
    if head[len(MAGIC)] != VERSION:
        raise StorageError(
            f"artifact {key!r} uses encryption format {head[len(MAGIC)]}, which this modelhost does not know"
        )
    start = len(MAGIC) + 1
    return Header(head[start : start + KEY_ID_BYTES], head[start + KEY_ID_BYTES : HEADER_SIZE])


class _Sealer:
    """AES-GCM under one object's derived key, with the nonce and AAD of each chunk."""

    def __init__(self, master: EncryptionKey, header: Header, key: str) -> None:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=header.salt, info=_INFO)
        self._aead = AESGCM(hkdf.derive(master.secret))
        self._aad = header.to_bytes() + key.encode()

    def _nonce_aad(self, index: int, final: bool) -> tuple[bytes, bytes]:
        flag = b"\x01" if final else b"\x00"
        return index.to_bytes(11, "big") + flag, self._aad + index.to_bytes(8, "big") + flag

    def seal(self, index: int, final: bool, plaintext: bytes) -> bytes:
        nonce, aad = self._nonce_aad(index, final)
        return self._aead.encrypt(nonce, plaintext, aad)

    def open(self, index: int, final: bool, sealed: bytes) -> bytes:
        nonce, aad = self._nonce_aad(index, final)
        return self._aead.decrypt(nonce, sealed, aad)


def encrypt(master: EncryptionKey, key: str, plaintext: Iterable[bytes]) -> Iterator[bytes]:
    """The encrypted form of ``plaintext`` (chunks of any size) for the artifact ``key``, streamed."""
    header = Header(master.id, os.urandom(SALT_BYTES))
    sealer = _Sealer(master, header, key)
    yield header.to_bytes()
    index, pending = 0, b""
    for piece in rechunk(plaintext, CHUNK_SIZE):
        if index:  # hold one chunk back: only the next one tells whether it is the last
            yield sealer.seal(index - 1, False, pending)
        pending, index = piece, index + 1
    yield sealer.seal(max(index - 1, 0), True, pending)


def decrypt(keyring: Keyring, key: str, header: Header, f: BinaryIO) -> Iterator[bytes]:
    """The plaintext chunks of the object ``key`` read from ``f`` (positioned after its header)."""
    master = keyring.find(header.key_id)
    if master is None:
        raise StorageError(
            f"artifact {key!r} is encrypted with key {header.key_id.hex()}, which is not configured; "
            "add it to MODELHOST_ENCRYPTION_OLD_KEYS (or the key file) to read it"
        )
    sealer = _Sealer(master, header, key)
    sealed, index = _read_exact(f, SEALED_CHUNK), 0
    while True:
        following = _read_exact(f, SEALED_CHUNK)
        final = not following
        try:
            yield sealer.open(index, final, sealed)
        except (InvalidTag, ValueError) as e:  # ValueError: shorter than a tag
            raise ArtifactCorrupted(
                f"artifact {key!r} fails authentication at chunk {index}: tampered, truncated or "
                "stored under another key"
            ) from e
        if final:
            return
        sealed, index = following, index + 1


def rechunk(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Pieces of exactly ``size`` bytes (the last one shorter) from chunks of any size."""
    buf = bytearray()
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            take = min(size - len(buf), len(view))
            buf += view[:take]
            view = view[take:]
            if len(buf) == size:
                yield bytes(buf)
                buf.clear()
    if buf:
        yield bytes(buf)


def _read_exact(f: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes; fewer only at the end of the file."""
    parts, left = [], n
    while left and (part := f.read(left)):
        parts.append(part)
        left -= len(part)
    return b"".join(parts)
