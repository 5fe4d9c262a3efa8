"""modelhost: a self-hosted platform for AI models as a service.

The public Python API is the HTTP client and the error hierarchy::

    from modelhost import Client
    client = Client("http://127.0.0.1:8000", api_key="...")
"""

from modelhost.client import Client
from modelhost.errors import (
    AlreadyExists,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    NotReady,
    Overloaded,
    PlatformError,
    RateLimited,
    Unauthenticated,
)

__version__ = "0.1.0"

__all__ = [
    "AlreadyExists",
    "Client",
    "Conflict",
    "Forbidden",
    "InvalidInput",
    "NotFound",
    "NotReady",
    "Overloaded",
    "PlatformError",
    "RateLimited",
    "Unauthenticated",
    "__version__",
]
