"""Runtimes by name: what a deployment's ``runtime`` field selects.

``load_runtime(kind, manifest, read_file)`` builds one; ``read_file(name)`` returns a file of
the version directory (verified against its recorded sha256).
"""

from __future__ import annotations

from collections.abc import Callable

from modelhost.errors import InvalidInput, LoadFailed, NotFound
from modelhost.registry.manifest import ONNX_FILE, TOKENIZER_FILE, WEIGHTS_FILE, Manifest
from modelhost.serving.runtimes.base import Runtime

ReadFile = Callable[[str], bytes]


def _torch(manifest: Manifest, read_file: ReadFile) -> Runtime:
    from modelhost.serving.runtimes.torch import TorchRuntime

    if manifest.architecture == "onnx":
        raise LoadFailed("this version is an imported ONNX graph; deploy it with runtime 'onnx'")
    return TorchRuntime(manifest, read_file(WEIGHTS_FILE))


def _onnx(manifest: Manifest, read_file: ReadFile) -> Runtime:
    """The version's own model.onnx; a trained version without one is exported on load."""
    from modelhost.registry.onnx_export import export_onnx
    from modelhost.serving.runtimes.onnx import OnnxRuntime

    try:
        model = read_file(ONNX_FILE)
    except NotFound:
        model = export_onnx(manifest, read_file(WEIGHTS_FILE))
    return OnnxRuntime(manifest, model)


def _llm(manifest: Manifest, read_file: ReadFile, precision: str = "fp32") -> Runtime:
    from modelhost.serving.llm.runtime import LLMRuntime

    if manifest.task != "language_model":
        raise LoadFailed(f"runtime 'llm' serves language models; this version's task is {manifest.task!r}")
    return LLMRuntime(
        manifest,
        read_file(WEIGHTS_FILE),
        read_file(TOKENIZER_FILE),
        precision=precision,  # type: ignore[arg-type]
    )


def _embedding(manifest: Manifest, read_file: ReadFile) -> Runtime:
    from modelhost.serving.llm.runtime import EmbeddingRuntime

    if manifest.task != "embedding":
        raise LoadFailed(f"runtime 'embedding' serves encoders; this version's task is {manifest.task!r}")
    return EmbeddingRuntime(manifest, read_file(WEIGHTS_FILE), read_file(TOKENIZER_FILE))


LOADERS: dict[str, Callable[[Manifest, ReadFile], Runtime]] = {
    "torch": _torch,
    "onnx": _onnx,
    "llm": _llm,
    "embedding": _embedding,
}


def default_runtime(manifest: Manifest) -> str:
    """The runtime a deployment gets when it names none: by what the version is."""
    if manifest.task == "language_model" and manifest.architecture in ("llama", "gpt2", "gpt"):
        return "llm"
    if manifest.task == "embedding":
        return "embedding"
    return "onnx" if manifest.architecture == "onnx" else "torch"


def load_runtime(kind: str, manifest: Manifest, read_file: ReadFile, precision: str = "fp32") -> Runtime:
    try:
        loader = LOADERS[kind]
    except KeyError:
        raise InvalidInput(f"unknown runtime {kind!r}; known: {', '.join(LOADERS)}") from None
    if kind == "llm":
        return _llm(manifest, read_file, precision)
    if precision != "fp32":
        raise InvalidInput(f"precision {precision!r} applies to runtime 'llm'; runtime {kind!r} serves fp32")
    return loader(manifest, read_file)


__all__ = ["LOADERS", "ReadFile", "Runtime", "default_runtime", "load_runtime"]
