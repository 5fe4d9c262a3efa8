"""Import an external ``.onnx`` file as a model version (architecture ``onnx``, task
``custom``): its inputs and outputs are the graph's own, served verbatim by the onnx runtime."""

from __future__ import annotations

from collections.abc import Iterator

import onnx
from google.protobuf.message import DecodeError, Message
from sqlalchemy.orm import Session

from modelhost.artifacts import ArtifactStore
from modelhost.datasets.formats import refuse_unsafe
from modelhost.errors import InvalidInput, UnsafeContent
from modelhost.registry.manifest import ONNX_FILE, Datatype, Manifest, Signature, TensorSpec
from modelhost.registry.service import ModelVersion, register_version

DATATYPES: dict[int, Datatype] = {
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.DOUBLE: "FP64",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.BOOL: "BOOL",
    onnx.TensorProto.STRING: "BYTES",
}


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    """A graph input or output as a TensorSpec; symbolic or unknown dimensions become -1."""
    if value.type.WhichOneof("value") != "tensor_type":
        raise InvalidInput(f"tensor {value.name!r}: only tensors are supported, not sequences or maps")
    tensor = value.type.tensor_type
    if tensor.elem_type not in DATATYPES:
        kind = onnx.TensorProto.DataType.Name(tensor.elem_type)
        raise InvalidInput(
            f"tensor {value.name!r} is {kind}; supported types are float, double, int32, int64, "
            "bool and string"
        )
    if not tensor.HasField("shape"):
        raise InvalidInput(f"tensor {value.name!r} has no declared rank; give the graph's I/O a shape")
    shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    return TensorSpec(name=value.name, datatype=DATATYPES[tensor.elem_type], shape=shape)


def _parse(data: bytes, filename: str) -> onnx.ModelProto:
    try:
        model = onnx.load_model_from_string(data)
        refuse_external_data(model, filename)
        onnx.checker.check_model(model)
    except (DecodeError, onnx.checker.ValidationError) as e:
        raise InvalidInput(f"{filename!r} is not a valid ONNX model: {e}") from e
    return model


def signature_from_onnx(data: bytes) -> Signature:
    """The graph's inputs (initializers excluded) and outputs as a Signature.

    Raises InvalidInput naming the tensor whose type modelhost cannot serve.
    """
    return _signature(_parse(data, "model.onnx").graph)


def _signature(graph: onnx.GraphProto) -> Signature:
    weights = {t.name for t in graph.initializer}  # IR < 4 lists initializers as inputs too
    inputs = [_spec(v) for v in graph.input if v.name not in weights]
    if not inputs:
        raise InvalidInput("the ONNX graph has no inputs; there is nothing to send it")
    return Signature(inputs=inputs, outputs=[_spec(v) for v in graph.output])


def _tensors(message: Message) -> Iterator[onnx.TensorProto]:
    """Every tensor anywhere in ``message``: initializers, sparse ones, node attributes, subgraphs,
    model-local functions, training graphs. A generic walk over the protobuf fields, so a place that
    holds tensors cannot be missed (model functions were: onnxruntime inlines them at load)."""
    if isinstance(message, onnx.TensorProto):
        yield message
        return
    for field, value in message.ListFields():
        if field.type == field.TYPE_MESSAGE:
            for item in [value] if isinstance(value, Message) else value:  # one, or a repeated field
                yield from _tensors(item)


def refuse_external_data(model: onnx.ModelProto, filename: str) -> None:
    """Raise InvalidInput if any tensor of ``model`` keeps its data in a side file.

    onnxruntime reads such files relative to its working directory when a model is loaded from
    bytes: a file in the upload could name one of the server's own files and serve its bytes back.
    """
    if any(_external(t) for t in _tensors(model)):
        raise InvalidInput(
            f"{filename!r} keeps weights in external data files; save it as one file "
            "(onnx.save_model(..., save_as_external_data=False))"
        )


def _external(tensor: onnx.TensorProto) -> bool:
    return tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data) > 0


def import_onnx(
    s: Session, store: ArtifactStore, model_name: str, data: bytes, filename: str
) -> ModelVersion:
    """Register ``data`` (an ONNX file) as the next version of ``model_name``.

    Raises UnsafeContent for a pickle, InvalidInput for anything that is not a valid,
    self-contained ONNX model whose inputs and outputs modelhost can serve.
    """
    try:
        refuse_unsafe(data[:2], filename)
    except UnsafeContent as e:
        raise UnsafeContent(
            f"{filename!r} looks like a pickle; modelhost never loads pickles (export the model to ONNX)"
        ) from e
    model = _parse(data, filename)
    manifest = Manifest(architecture="onnx", config={}, task="custom", signature=_signature(model.graph))
    return register_version(s, store, model_name, manifest, {ONNX_FILE: data})
