"""Attack item 8, the browser attacks, against the running server: DNS rebinding (a foreign
``Host``), cross-origin state changes for every method, ``text/plain`` bodies on JSON routes
(what a cross-site form sends without a preflight), and the headers that stop sniffing and
framing on every kind of answer (API, inference, errors, health)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.security.small_model import deploy_tiny, infer_body
from tests.security.support import AUTH, Target, admin, raw_request, target
from tests.servers import ADMIN_KEY, Server, start_server

pytestmark = pytest.mark.slow
__all__ = ["admin", "target"]  # fixtures, imported for pytest

EVIL = "http://evil.example"
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
}
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
# Every state-changing method, on the control plane and on each inference face. Each would
# change something (or run a model) if it got through.
STATE_CHANGES = [
    ("POST", "/api/v1/keys", {"name": "planted", "role": "admin"}),
    ("PUT", "/api/v1/deployments/planted", {"model": "tiny", "runtime": "onnx"}),
    ("PATCH", "/api/v1/deployments/tiny", {"replicas": 2}),
    ("DELETE", "/api/v1/deployments/tiny", None),
    ("POST", "/v2/models/tiny/infer", infer_body()),
    ("POST", "/v1/models/tiny:predict", {"instances": [[1, 2, 3]]}),
    ("POST", "/v1/chat/completions", CHAT),
]


@pytest.fixture(scope="module")
def tiny(target: Target, admin: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    return deploy_tiny(target.url, admin, tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def configured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server told its public name and a second origin (a UI served elsewhere)."""
    srv = start_server(
        tmp_path_factory.mktemp("configured") / "home",
        MODELHOST_ALLOWED_HOSTS='["127.0.0.1", "models.internal", ".corp.example"]',
        MODELHOST_ALLOWED_ORIGINS='["https://ui.corp.example"]',
    )
    yield srv
    srv.stop()


def port_of(url: str) -> str:
    return url.rsplit(":", 1)[1]


def test_a_foreign_host_is_refused_everywhere_health_included(target: Target, tiny: str) -> None:
    for method, path in (
        ("GET", "/v2/health/live"),
        ("GET", "/v2/health/ready"),
        ("GET", "/api/v1/keys"),
        ("POST", f"/v2/models/{tiny}/infer"),
        ("POST", "/v1/chat/completions"),
    ):
        headers = {**AUTH, "Host": f"evil.example:{port_of(target.url)}"}
        r = httpx.request(method, target.url + path, headers=headers, json=infer_body(), timeout=10)
        assert r.status_code == 400, (path, r.text)
        assert "'evil.example' is not served here" in r.text and "MODELHOST_ALLOWED_HOSTS" in r.text
        assert r.headers["x-frame-options"] == "DENY"


def test_a_missing_host_is_refused(target: Target) -> None:
    status, answer = raw_request(target.url, b"GET /v2/health/live HTTP/1.0")
    assert status == 400 and b"missing Host header" in answer


def test_the_loopback_names_are_served_on_any_port(target: Target) -> None:
    for host in ("127.0.0.1", "localhost", "LOCALHOST:1", "[::1]", f"[::1]:{port_of(target.url)}"):
        r = httpx.get(target.url + "/v2/health/live", headers={"Host": host}, timeout=10)
        assert r.status_code == 200, host


def test_configured_hosts_replace_the_defaults(configured: Server) -> None:
    def live(host: str) -> int:
        return httpx.get(configured.url + "/v2/health/live", headers={"Host": host}, timeout=10).status_code

    assert live("models.internal:8443") == 200
    assert live("corp.example") == live("api.corp.example") == 200
    assert live("localhost") == live("evilcorp.example") == live("corp.example.evil.example") == 400


@pytest.mark.parametrize(("method", "path", "body"), STATE_CHANGES)
def test_cross_origin_state_changes_are_refused(
    admin: httpx.Client, tiny: str, method: str, path: str, body: object
) -> None:
    before = admin.get("/api/v1/keys").json(), admin.get("/api/v1/deployments").json()
    for headers in (
        {"Origin": EVIL},
        {"Origin": "null"},  # sandboxed frames and file:// pages
        {"Origin": f"http://127.0.0.1.evil.example:{port_of(str(admin.base_url))}"},
        {"Origin": f"https://evil.example:{port_of(str(admin.base_url))}"},
        {"Sec-Fetch-Site": "cross-site"},  # a browser that left out Origin
        {"Sec-Fetch-Site": "same-site"},
    ):
        r = admin.request(method, path, json=body, headers=headers)
        assert r.status_code == 403, (headers, r.text)
        assert "refused" in r.text
    assert (admin.get("/api/v1/keys").json(), admin.get("/api/v1/deployments").json()) == before


def test_reads_from_other_origins_and_same_origin_changes_pass(admin: httpx.Client, tiny: str) -> None:
    assert admin.get("/api/v1/keys", headers={"Origin": EVIL}).status_code == 200
    own = str(admin.base_url).rstrip("/")
    for headers in ({"Origin": own}, {"Sec-Fetch-Site": "same-origin"}, {}):
        r = admin.post(f"/v2/models/{tiny}/infer", json=infer_body(), headers=headers)
        assert r.status_code == 200, (headers, r.text)
        assert r.json()["outputs"][0]["name"] in ("scaled", "doubled")


def test_listed_origins_may_change_state(configured: Server) -> None:
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=configured.url, headers=auth, timeout=30) as c:
        ok = c.post(
            "/api/v1/keys",
            json={"name": "from-ui", "role": "viewer"},
            headers={"Origin": "https://ui.corp.example"},
        )
        assert ok.status_code == 201, ok.text
        other = c.post(
            "/api/v1/keys",
            json={"name": "from-api", "role": "viewer"},
            headers={"Origin": "https://api.corp.example"},
        )
        assert other.status_code == 403
        assert [k["name"] for k in c.get("/api/v1/keys").json()] == ["admin", "from-ui"]


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("/api/v1/keys", "control"),
        ("/v1/chat/completions", "openai"),
        ("/v2/models/tiny/infer", "protocol"),
        ("/v1/models/tiny:predict", "protocol"),
    ],
)
def test_json_routes_refuse_text_plain_bodies(admin: httpx.Client, tiny: str, path: str, shape: str) -> None:
    keys = admin.get("/api/v1/keys").json()
    body = b'{"name": "plain", "role": "admin", "instances": [[1, 2, 3]]}'
    for content_type in (
        "text/plain",
        "text/plain;charset=UTF-8",
        "multipart/form-data; boundary=x",
        "application/xml",
    ):
        r = admin.post(path, content=body, headers={"Content-Type": content_type})
        assert r.status_code == 415, (content_type, r.text)
        error = r.json()["error"]
        message = error if shape == "protocol" else error["message"]
        assert "send application/json" in message and content_type.split(";")[0] in message
        if shape == "openai":
            assert error["type"] == "invalid_request_error" and error["code"] == "unsupported_media_type"
    assert admin.get("/api/v1/keys").json() == keys


def test_curl_style_form_content_type_with_a_json_body_still_infers(admin: httpx.Client, tiny: str) -> None:
    """``curl -d '{...}'`` labels JSON as a form (the README's example); a browser form cannot
    produce JSON (it percent-encodes braces and quotes), so accepting the label opens nothing."""
    body = orjson.dumps(infer_body())
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    r = admin.post(f"/v2/models/{tiny}/infer", content=body, headers=form)
    assert r.status_code == 200, r.text
    assert {o["name"]: o["data"] for o in r.json()["outputs"]}["scaled"] == [6.0, 3.0]


def test_uploads_take_multipart_and_infer_takes_binary_but_not_elsewhere(
    admin: httpx.Client, tiny: str
) -> None:
    r = admin.post(
        "/api/v1/datasets", data={"name": "tiny-csv"}, files={"file": ("t.csv", b"a,b\n1,2\n3,4\n")}
    )
    assert r.status_code == 201, r.text
    r = admin.post("/api/v1/keys", content=b"\x00\x01", headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 415
    # the OIP binary extension is accepted by the guard and parsed by the route
    r = admin.post(
        f"/v2/models/{tiny}/infer",
        content=b"{}",
        headers={"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": "2"},
    )
    assert r.status_code == 400 and "inputs" in r.json()["error"]


def test_security_headers_on_every_kind_of_answer(target: Target, admin: httpx.Client, tiny: str) -> None:
    answers = {
        "api": admin.get("/api/v1/keys"),
        "api error": admin.get("/api/v1/datasets/missing"),
        "unauthenticated": httpx.get(target.url + "/api/v1/keys", timeout=10),
        "inference": admin.post(f"/v2/models/{tiny}/infer", json=infer_body()),
        "inference error": admin.post("/v2/models/missing/infer", json=infer_body()),
        "predict": admin.post(f"/v1/models/{tiny}:predict", json={"instances": [[1, 2, 3]]}),
        "health": httpx.get(target.url + "/v2/health/live", timeout=10),
        "docs": admin.get("/docs"),
        "refused": admin.post("/api/v1/keys", json={}, headers={"Origin": EVIL}),
    }
    assert [a.status_code for a in answers.values()] == [200, 404, 401, 200, 404, 400, 200, 200, 403]
    for what, r in answers.items():
        for name, value in SECURITY_HEADERS.items():
            assert r.headers.get_list(name) == [value], (what, name)
        assert len(r.headers["x-request-id"]) > 8, what


def test_request_ids_are_echoed_when_clean(admin: httpx.Client) -> None:
    r = admin.get("/v2/health/live", headers={"X-Request-Id": "trace-01:ab.c_d"})
    assert r.headers["x-request-id"] == "trace-01:ab.c_d"
    a, b = admin.get("/v2/health/live"), admin.get("/v2/health/live")
    assert a.headers["x-request-id"] != b.headers["x-request-id"]


MARKUP = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>']


@pytest.mark.parametrize("markup", MARKUP)
def test_markup_in_user_strings_comes_back_as_json_data_never_as_a_page(
    admin: httpx.Client, markup: str
) -> None:
    """No route renders user data into HTML: a refused name and a stored description come
    back inside JSON strings, typed application/json with nosniff, so no browser runs them."""
    refused = admin.post("/api/v1/datasets/samples/iris", json={"name": markup})
    assert refused.status_code == 400
    stored = admin.post(
        "/api/v1/datasets",
        data={"name": f"markup-{MARKUP.index(markup)}", "description": markup},
        files={"file": ("t.csv", b"a,b\n1,2\n", "text/csv")},
    )
    assert stored.status_code == 201, stored.text
    shown = admin.get(f"/api/v1/datasets/markup-{MARKUP.index(markup)}")
    for r in (refused, stored, shown):
        assert r.headers["content-type"].startswith("application/json")
        assert r.headers["x-content-type-options"] == "nosniff"
        orjson.loads(r.content)  # well-formed JSON: the markup sits inside a string
    assert shown.json()["description"] == markup  # kept as given, for clients to escape when shown
    for path in ("/docs", "/redoc"):  # the only HTML served: static pages with no user data
        page = admin.get(path)
        assert markup not in page.text
