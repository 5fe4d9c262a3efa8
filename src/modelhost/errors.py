"""The one exception hierarchy of modelhost.

Every domain failure is a subclass of :class:`PlatformError` that carries a stable
``code`` (the ``type`` clients see) and an HTTP ``status``. The API maps them to a
response in exactly one place (``modelhost.api.errors``); the client SDK maps the
response back to the same class, so ``except NotFound`` works on both sides.
Messages reach clients: never put secrets in them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar


class PlatformError(Exception):
    """Base of every modelhost error."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500
    by_code: ClassVar[dict[str, type[PlatformError]]] = {}

    def __init_subclass__(cls, code: str | None = None, status: int | None = None, **kw: object) -> None:
        # a subclass that names no code or status keeps its parent's: a refinement of
        # InvalidInput is still a 400 (it once reset to 500)
        super().__init_subclass__(**kw)
        cls.code, cls.status = code or cls.code, status or cls.status
        PlatformError.by_code.setdefault(cls.code, cls)

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(PlatformError, code="invalid_input", status=400):
    """The request is malformed or fails validation; the message names the field."""


class Unauthenticated(PlatformError, code="unauthenticated", status=401):
    """No credentials, or credentials that match no live key."""


class Forbidden(PlatformError, code="forbidden", status=403):
    """The caller is known but may not do this."""


class NotFound(PlatformError, code="not_found", status=404):
    """The named resource does not exist (or the caller may not see it)."""


class MethodNotAllowed(PlatformError, code="method_not_allowed", status=405):
    """The route exists but not for this HTTP method."""


class AlreadyExists(PlatformError, code="already_exists", status=409):
    """A resource with this name already exists."""


class Conflict(PlatformError, code="conflict", status=409):
    """The resource is in a state that does not allow this operation."""


class PayloadTooLarge(PlatformError, code="payload_too_large", status=413):
    """The upload or request body exceeds the configured limit."""


class UnsupportedMediaType(PlatformError, code="unsupported_media_type", status=415):
    """The body's Content-Type is not one this route reads; the message names the expected one."""


class UnsafeContent(PlatformError, code="unsafe_content", status=422):
    """The upload is of a kind modelhost refuses to load (for example a pickle)."""


class Overloaded(PlatformError, code="overloaded", status=503):
    """Back-pressure: a bounded queue is full. Clients should retry after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(PlatformError, code="rate_limited", status=429):
    """A key's request rate or token quota is used up. Clients should retry after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class GatewayTimeout(PlatformError, code="timeout", status=504):
    """The request was not answered within its deadline (and was dropped if not yet run)."""


class NotReady(PlatformError, code="not_ready", status=503):
    """The resource exists but cannot serve yet (loading, or failed to load)."""


class LoadFailed(PlatformError, code="load_failed", status=422):
    """A model version could not be loaded into a runtime; the message says why."""


class ArtifactCorrupted(PlatformError, code="artifact_corrupted", status=500):
    """Stored bytes do not match their recorded sha256: corruption or tampering."""


class StorageError(PlatformError, code="storage_error", status=500):
    """The artifact or metadata store failed."""


PlatformError.by_code["internal"] = PlatformError


def describe_validation_errors(errors: Sequence[Mapping[str, Any]], skip: tuple[str, ...] = ()) -> str:
    """pydantic's error list as one line that names each field: ``a.b: message; c: ...``.

    ``skip`` drops location parts that mean nothing to the user (FastAPI's ``body``).
    """
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in skip) or "body"
        kind = err.get("type")
        msg = "unknown field" if kind == "extra_forbidden" else str(err.get("msg", "invalid"))
        if kind == "json_invalid":
            where, msg = "body", f"malformed JSON ({err.get('ctx', {}).get('error', 'parse error')})"
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)
