"""Attack item 5: no pickle is ever loaded (the RCE of TorchServe, MLflow and BentoML).

Real malicious pickles — whose ``__reduce__`` runs ``touch MARKER`` — are sent through every
door a file enters by (dataset upload, model import, a Hugging Face folder's weights, GGUF and
ONNX routes), in every disguise (protocols 0-5, torch.save's zip, gzip, .bin/.pt/.pkl names,
neutral names). Each is refused with a 4xx and the marker never appears, also after trying to
deploy and serve what was sent. A source scan backs this up: nothing in ``src/`` can unpickle.
"""

from __future__ import annotations

import ast
import gzip
import io
import tarfile
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.security.malformed import zipped
from tests.security.support import Target, admin, malicious_pickle, target, torch_save_zip

pytestmark = pytest.mark.slow
__all__ = ["admin", "target"]  # fixtures, imported for pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "modelhost"
PROTOCOLS = (2, 3, 4, 5)


def tarred(files: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def object_npy(marker: Path) -> bytes:
    """A .npy of dtype object: numpy stores its cells as a pickle after the header."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": (1,)})
    return header.getvalue() + malicious_pickle(marker, 2)


def dataset_uploads(marker: Path) -> list[tuple[str, bytes]]:
    """(filename, bytes) of every disguise a pickle may wear as a dataset."""
    uploads: list[tuple[str, bytes]] = []
    for p in PROTOCOLS:
        evil = malicious_pickle(marker, p)
        uploads += [(f"data{p}.pkl", evil), (f"data{p}.csv", evil), (f"data{p}.npy", evil)]
        uploads += [(f"data{p}.txt", evil), (f"data{p}.jsonl", evil), (f"data{p}", evil)]
    evil = malicious_pickle(marker, 2)
    uploads += [
        ("weights.pt", torch_save_zip(marker)),
        ("weights.zip", torch_save_zip(marker)),
        ("model.bin", evil),
        ("model.pth", evil),
        ("model.ckpt", evil),
        ("model.joblib", evil),
        ("data.pkl.gz", gzip.compress(evil)),
        ("data.pkl", malicious_pickle(marker, 0)),  # protocol 0 has no magic bytes: refused by name
        ("objects.npy", object_npy(marker)),
        ("arrays.npz", zipped({"x.npy": object_npy(marker)})),
        ("arrays2.npz", zipped({"x.npy": evil})),
        ("images.zip", zipped({"cat/a.png": evil})),
        ("images.tar.gz", tarred({"cat/a.png": evil})),
        ("images.tar", tarred({"cat/data.pkl": evil}, "w")),
    ]
    return uploads


def model_imports(marker: Path) -> list[tuple[str, bytes]]:
    """(filename, bytes) of every disguise a pickle may wear as a model to import."""
    evil = malicious_pickle(marker, 2)
    config = b'{"model_type": "llama"}'
    uploads: list[tuple[str, bytes]] = []
    for p in PROTOCOLS:
        evil_p = malicious_pickle(marker, p)
        uploads += [(f"m{p}.onnx", evil_p), (f"m{p}.gguf", evil_p), (f"m{p}", evil_p), (f"m{p}.pkl", evil_p)]
    uploads += [
        ("model.pt", torch_save_zip(marker)),
        ("model.zip", torch_save_zip(marker)),  # torch.save's zip as an "HF folder"
        ("model.bin", evil),
        ("model.pth", evil),
        ("model.pkl.gz", gzip.compress(evil)),
        ("pytorch_model.bin", evil),
        ("hf.zip", zipped({"config.json": config, "pytorch_model.bin": evil, "tokenizer.json": b"{}"})),
        ("hf.tar.gz", tarred({"m/config.json": config, "m/pytorch_model.bin": evil})),
        ("hf2.zip", zipped({"config.json": config, "model.safetensors.pt": evil})),
        ("hf3.zip", zipped({"config.json": config, "weights.json": evil})),  # neutral name, pickle bytes
        ("hf4.tar", tarred({"config.json": config, "training_args.bin": evil}, "w")),
        ("hf5.zip", zipped({"config.json": config, "inner.zip": torch_save_zip(marker)})),
    ]
    return uploads


def refused(r: httpx.Response, what: str) -> None:
    assert 400 <= r.status_code < 500, (what, r.status_code, r.text)
    assert "error" in r.json(), (what, r.text)


def test_dataset_uploads_of_pickles_are_refused(target: Target, admin: httpx.Client) -> None:
    for i, (filename, data) in enumerate(dataset_uploads(target.marker)):
        r = admin.post("/api/v1/datasets", data={"name": f"evil{i}"}, files={"file": (filename, data)})
        refused(r, filename)
        # a pickle with pickle's magic bytes is named as one, whatever its file is called
        if data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
            assert r.status_code == 422 and "pickle" in r.json()["error"]["message"], (filename, r.text)
        assert not target.marker.exists(), filename
    assert admin.get("/api/v1/datasets").json() == []
    assert target.artifact_files() == set()  # nothing was stored either


def test_model_imports_of_pickles_are_refused(target: Target, admin: httpx.Client) -> None:
    for i, (filename, data) in enumerate(model_imports(target.marker)):
        r = admin.post(f"/api/v1/models/evil{i}/import", files={"file": (filename, data)})
        refused(r, filename)
        assert not target.marker.exists(), filename
    assert admin.get("/api/v1/models").json() == []


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pkl", ".pth", ".ckpt"])
def test_pickle_named_imports_say_why(admin: httpx.Client, suffix: str) -> None:
    r = admin.post("/api/v1/models/named/import", files={"file": ("model" + suffix, b"\x80\x04junk")})
    assert r.status_code == 422 and "never loads pickles" in r.json()["error"]["message"]


def test_nothing_refused_can_be_deployed_or_served(target: Target, admin: httpx.Client) -> None:
    for name in ("evil0", "evil1", "named"):
        r = admin.post("/api/v1/deployments", json={"name": f"d-{name}", "model": name, "version": 1})
        assert r.status_code in (400, 404), r.text
        r = admin.post(f"/v1/models/{name}:predict", json={"instances": [[0.0]]})
        assert r.status_code == 404, r.text
        r = admin.post(f"/v2/models/{name}/infer", json={"inputs": []})
        assert r.status_code in (400, 404), r.text
    assert not target.marker.exists()


# --- the source scan: nothing in src/ can unpickle

UNPICKLERS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("pickle", "Unpickler"),
    ("cPickle", "loads"),
    ("torch", "load"),
    ("jit", "load"),  # torch.jit.load runs TorchScript from a file
    ("joblib", "load"),
    ("dill", "load"),
    ("dill", "loads"),
    ("cloudpickle", "loads"),
    ("marshal", "loads"),
    ("shelve", "open"),
    ("pd", "read_pickle"),
    ("pandas", "read_pickle"),
}
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _dotted(node: ast.expr) -> tuple[str, ...]:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return tuple(reversed(parts))


def _findings(text: str, where: str) -> list[str]:
    """Each way ``text`` (Python source) could unpickle, as ``where:line: what``."""
    found = []
    tree = ast.parse(text, where)
    aliases = {  # import torch as t: t.load is torch.load
        a.asname: a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names if a.asname
    }
    for node in ast.walk(tree):
        at = f"{where}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            if bad := {n.split(".")[0] for n in names if n} & FORBIDDEN_MODULES:
                found.append(f"{at}: imports {sorted(bad)}")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name and name[0] in aliases:
            name = (*aliases[name[0]].split("."), *name[1:])
        keywords = {k.arg: k.value for k in node.keywords}
        if (
            (name[-2:] in UNPICKLERS and name[0] != "safetensors")
            or name[-1:] == ("read_pickle",)
            or name[-2:] == ("yaml", "load")
        ):
            found.append(f"{at}: calls {'.'.join(name)}")
        if name in (("np", "load"), ("numpy", "load")):
            flag = keywords.get("allow_pickle")
            if not (isinstance(flag, ast.Constant) and flag.value is False):
                found.append(f"{at}: np.load without allow_pickle=False")
        if "weights_only" in keywords:
            found.append(f"{at}: weights_only= (a pickle loader is being called)")
    return found


def test_source_scan_finds_no_way_to_unpickle() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 50 and SRC / "datasets" / "arrays.py" in files
    findings = [f for path in files for f in _findings(path.read_text(), str(path.relative_to(SRC)))]
    assert findings == []


@pytest.mark.parametrize(
    "line",
    [
        "import pickle",
        "from joblib import load",
        "import dill.settings",
        "torch.load(f)",
        "torch.load(f, weights_only=True)",
        "np.load(f)",
        "numpy.load(f, allow_pickle=True)",
        "yaml.load(text)",
        "df = pd.read_pickle(p)",
        "torch.jit.load(p)",
        "import torch as t; t.load(f)",
        "pickle.Unpickler(f).load()",
    ],
)
def test_source_scan_catches_what_it_looks_for(line: str) -> None:
    assert _findings(line + "\n", "probe.py"), line


def test_source_scan_lets_safe_loading_be() -> None:
    safe = "np.load(f, allow_pickle=False)\nyaml.safe_load(t)\nsafetensors.torch.load(b)\njson.loads(s)\n"
    assert _findings(safe, "probe.py") == []
