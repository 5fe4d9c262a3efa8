"""The allow-list for every name a user gives (datasets, models, deployments, keys).

Names reach artifact keys and URLs, so they must match before they touch storage.
"""

from __future__ import annotations

import re

from modelhost.errors import InvalidInput

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)


def check_name(kind: str, name: str) -> str:
    """Return ``name`` if it is a valid ``kind`` name, else raise InvalidInput saying why."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise InvalidInput(
            f"invalid {kind} name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name
