"""A model file's chat template is code the model's author wrote: server-side template injection.

Templates from imported folders are rendered in Jinja's immutable sandbox. Each classic escape
(reaching ``__globals__``, ``os``, ``__subclasses__`` through cycler, lipsum, joiner, the
template reference, string formatting) is imported as a model's template, deployed, and asked
for a chat completion: the answer is a 4xx saying the template failed, the marker file the
payload would create never appears, and the server keeps serving.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.security.malformed import tiny_llama_files, zipped
from tests.security.support import Target, admin, assert_healthy, target

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
__all__ = ["admin", "target"]  # fixtures, imported for pytest


def payloads(marker: str) -> list[str]:
    run = f"touch {marker}"
    return [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        f"{{{{ cycler.__init__.__globals__.os.system('{run}') }}}}",
        f"{{{{ lipsum.__globals__['os'].popen('{run}').read() }}}}",
        f"{{{{ joiner.__init__.__globals__.os.system('{run}') }}}}",
        f"{{{{ namespace.__init__.__globals__.os.system('{run}') }}}}",
        f"{{{{ self._TemplateReference__context.cycler.__init__.__globals__.os.system('{run}') }}}}",
        "{{ messages.__class__.__base__.__subclasses__() }}",
        "{{ raise_exception.__globals__ }}",
        "{{ '{0.__class__.__mro__}'.format(messages) }}",
        "{{ messages.append('x') }}{{ messages.clear() }}",  # the immutable sandbox: no mutation
        "{% for i in range(10**9) %}{% endfor %}",  # past the sandbox's range limit
    ]


@pytest.fixture(scope="module")
def template_models(target: Target, admin: httpx.Client) -> list[str]:
    """One deployment per payload, each an imported tiny Llama carrying it as its chat template."""
    names = []
    for i, template in enumerate(payloads(str(target.marker))):
        folder = zipped({**tiny_llama_files(), "chat_template.jinja": template})
        r = admin.post(f"/api/v1/models/t{i}/import", files={"file": ("t.zip", folder)})
        if r.status_code != 201:  # refused at import is as good: the template never runs
            assert r.status_code == 400, r.text
            continue
        r = admin.put(f"/api/v1/deployments/t{i}", json={"model": f"t{i}", "version": 1})
        assert r.status_code == 201, r.text
        names.append(f"t{i}")
    assert len(names) >= 8  # most of them import: the defence is at rendering
    return names


def test_template_escapes_are_refused_when_rendered(
    target: Target, admin: httpx.Client, template_models: list[str]
) -> None:
    for name in template_models:
        chat = {"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        r = admin.post("/v1/chat/completions", json=chat)
        assert r.status_code == 400, (name, r.status_code, r.text)
        # refused by the sandbox, or an unsafe attribute read as undefined: an empty prompt
        message = r.json()["error"]["message"]
        assert "chat template" in message or message == "prompt: it has no tokens", (name, r.text)
        assert not target.marker.exists(), name
    assert_healthy(target.url)


def test_an_honest_template_still_renders(target: Target, admin: httpx.Client) -> None:
    template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    folder = zipped({**tiny_llama_files(), "chat_template.jinja": template})
    assert admin.post("/api/v1/models/honest/import", files={"file": ("t.zip", folder)}).status_code == 201
    assert admin.put("/api/v1/deployments/honest", json={"model": "honest", "version": 1}).status_code == 201
    chat = {"model": "honest", "messages": [{"role": "user", "content": "a b"}], "max_tokens": 2}
    r = admin.post("/v1/chat/completions", json=chat)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 2


def test_a_slow_template_renders_off_the_event_loop(target: Target, admin: httpx.Client) -> None:
    """A template that loops for long (inside the sandbox's limits) holds one worker thread:
    the health probe and other requests keep being answered while it renders."""
    template = "{% for i in range(100000) %}{% for j in range(600) %}{% endfor %}{% endfor %}user:"
    folder = zipped({**tiny_llama_files(), "chat_template.jinja": template})
    assert admin.post("/api/v1/models/slow/import", files={"file": ("t.zip", folder)}).status_code == 201
    assert admin.put("/api/v1/deployments/slow", json={"model": "slow", "version": 1}).status_code == 201
    chat = {"model": "slow", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    results: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: results.append(admin.post("/v1/chat/completions", json=chat)))
    started = time.monotonic()
    worker.start()
    time.sleep(0.3)  # the render is under way
    probes = []
    while worker.is_alive() and len(probes) < 20:
        t = time.monotonic()
        assert httpx.get(target.url + "/v2/health/live", timeout=10).status_code == 200
        probes.append(time.monotonic() - t)
    worker.join()
    assert results[0].status_code == 200, results[0].text
    assert time.monotonic() - started > 1.0 and probes, "the template should take a while to render"
    assert max(probes) < 0.5, probes  # the event loop kept answering during the render
