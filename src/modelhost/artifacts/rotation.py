"""Key rotation and the census behind ``modelhost encryption status``.

Rotation without downtime, in three steps the docs spell out:

1. configure the new key as current and the old one as old (``MODELHOST_ENCRYPTION_KEY`` and
   ``MODELHOST_ENCRYPTION_OLD_KEYS``) on every server and worker (a rolling restart): from
   then on everything new is written under the new key and both forms read;
2. run :func:`rotate` (``modelhost encryption rotate``) with the same settings: each object is
   rewritten on its own with the store's atomic put, so readers always find a whole object in
   one form or the other;
3. once :func:`census` shows nothing left under the old key, drop it from the settings.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from modelhost.artifacts.base import ArtifactStore
from modelhost.artifacts.encrypted import EncryptedArtifactStore, Rewrite
from modelhost.artifacts.keyring import Keyring
from modelhost.errors import InvalidInput, PlatformError

Role = Literal["current", "old", "unknown", "clear", "unreadable"]


@dataclass(frozen=True)
class KeyCount:
    """How many objects one key (``key_id`` in hex; None for the clear) holds, and its role here."""

    key_id: str | None
    role: Role
    objects: int


@dataclass
class RotationResult:
    """What :func:`rotate` did: counts per outcome, and the objects it could not rewrite (key -> why)."""

    counts: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def as_encrypted(store: ArtifactStore) -> EncryptedArtifactStore:
    """``store`` as an encrypted store; a plain one is viewed through an empty keyring (read-only use)."""
    return (
        store if isinstance(store, EncryptedArtifactStore) else EncryptedArtifactStore(store, Keyring(None))
    )


def census(store: ArtifactStore) -> list[KeyCount]:
    """Objects per key, current key first, then old, unknown (not configured), clear, unreadable."""
    enc = as_encrypted(store)
    counts: Counter[tuple[str | None, Role]] = Counter()
    for key in enc.list():
        try:
            key_id = enc.key_id_of(key)
        except PlatformError:  # corrupt, or deleted meanwhile: the count says so, the census goes on
            counts[None, "unreadable"] += 1
            continue
        counts[_label(enc.keyring, key_id)] += 1
    order: list[Role] = ["current", "old", "unknown", "clear", "unreadable"]
    rows = [KeyCount(k, role, n) for (k, role), n in counts.items()]
    if enc.keyring.current is not None and not any(r.role == "current" for r in rows):
        rows.append(KeyCount(enc.keyring.current.hex_id, "current", 0))
    return sorted(rows, key=lambda r: (order.index(r.role), r.key_id or ""))


def rotate(store: ArtifactStore, progress: Callable[[str, str], None] | None = None) -> RotationResult:
    """Rewrite every object not yet under the current key (or in the clear, if there is none).

    Objects that fail (corrupt, or under a key that is not configured) are reported in
    ``failed`` and left as they are; the others are still rotated. ``progress(key, outcome)``
    is called after each object.
    """
    if not isinstance(store, EncryptedArtifactStore):
        raise InvalidInput(
            "no encryption key is configured: set MODELHOST_ENCRYPTION_KEY (the new key) and "
            "MODELHOST_ENCRYPTION_OLD_KEYS (the keys to rotate away from)"
        )
    result = RotationResult()
    for key in store.list():
        try:
            outcome = store.reencrypt(key).value
        except PlatformError as e:
            result.failed[key] = e.message
            outcome = "failed"
        result.counts[outcome] = result.counts.get(outcome, 0) + 1
        if progress is not None:
            progress(key, outcome)
    for rewrite in Rewrite:
        result.counts.setdefault(rewrite.value, 0)
    return result


def _label(keyring: Keyring, key_id: bytes | None) -> tuple[str | None, Role]:
    if key_id is None:
        return None, "clear"
    if keyring.current is not None and key_id == keyring.current.id:
        return key_id.hex(), "current"
    return key_id.hex(), "old" if keyring.find(key_id) else "unknown"
