"""Chat templates: the model's own Jinja template (from its tokenizer_config.json or GGUF
metadata), rendered in a sandbox — a template is data from a model file, and must not reach
Python objects — with the helpers Hugging Face templates expect."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from modelhost.errors import InvalidInput

ROLES = ("system", "user", "assistant", "tool", "developer")


class TemplateError(InvalidInput):
    """The template refused the conversation (its own ``raise_exception``) or failed."""


def _raise(message: str) -> None:
    raise TemplateError(f"chat template: {message}")


@lru_cache(maxsize=32)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, undefined=jinja2.ChainableUndefined
    )
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: dt.datetime.now(dt.UTC).strftime(fmt)
    env.filters["tojson"] = _tojson
    try:
        return env.from_string(template)
    except jinja2.TemplateError as e:
        raise TemplateError(f"chat template does not compile: {e}") from e


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    import json

    return json.dumps(value, indent=indent, ensure_ascii=False)


def render_chat(
    template: str,
    messages: Sequence[dict[str, Any]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    **extra: Any,
) -> str:
    """The prompt text for ``messages`` (``[{"role", "content"}, ...]``)."""
    for i, m in enumerate(messages):
        if m.get("role") not in ROLES:
            raise InvalidInput(
                f"messages[{i}].role: expected one of {', '.join(ROLES)}, got {m.get('role')!r}"
            )
    try:
        return _compile(template).render(
            messages=list(messages),
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
            **extra,
        )
    except TemplateError:
        raise
    except (jinja2.TemplateError, OverflowError, RecursionError) as e:  # the sandbox's range limit
        raise TemplateError(f"chat template failed: {e}") from e
