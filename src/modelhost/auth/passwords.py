"""Password hashing with scrypt (stdlib): memory-hard, salted, compared in constant time.

A hash is stored as ``scrypt$n$r$p$salt_hex$hash_hex`` so the cost parameters travel with
it: raising them later leaves old hashes verifiable.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from modelhost.errors import InvalidInput

MIN_LENGTH = 12
MAX_LENGTH = 1024
"""Long enough for any passphrase; bounds the work an anonymous login can ask for."""
N, R, P = 2**14, 8, 1
SALT_BYTES, HASH_BYTES = 16, 32


def check_password(password: str) -> str:
    """``password`` if it is acceptable, else InvalidInput saying why (never echoing it)."""
    if not isinstance(password, str) or len(password) < MIN_LENGTH:
        raise InvalidInput(f"password: use at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise InvalidInput(f"password: use at most {MAX_LENGTH} characters")
    return password


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=HASH_BYTES
    )


def hash_password(password: str) -> str:
    check_password(password)
    salt = secrets.token_bytes(SALT_BYTES)
    return f"scrypt${N}${R}${P}${salt.hex()}${_scrypt(password, salt, N, R, P).hex()}"


DUMMY_HASH = f"scrypt${N}${R}${P}${'00' * SALT_BYTES}${'00' * HASH_BYTES}"
"""Verified against when the user does not exist, so an unknown name costs the same time."""


def verify_password(password: str, stored: str) -> bool:
    """True if ``password`` matches ``stored``; False for any malformed hash or input."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt" or not 0 < len(password) <= MAX_LENGTH:
            return False
        computed = _scrypt(password, bytes.fromhex(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(computed, bytes.fromhex(digest))
