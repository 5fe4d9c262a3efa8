"""Turn a fitted model into a version: a manifest (signature, preprocessing, classes,
metrics, lineage) and safetensors weights. No pickle."""

from __future__ import annotations

from safetensors.torch import save

from modelhost.registry.manifest import Lineage, Manifest, Signature, TensorSpec
from modelhost.training.data import PreparedData
from modelhost.training.loop import FitResult
from modelhost.training.spec import TrainSpec


def output_specs(task: str, classes: list[int] | list[float] | list[str] | None) -> list[TensorSpec]:
    if task == "regression" or not classes:
        return [TensorSpec(name="prediction", datatype="FP32", shape=[-1])]
    label_type = {int: "INT64", float: "FP64", str: "BYTES"}[type(classes[0])]
    return [
        TensorSpec(name="label", datatype=label_type, shape=[-1]),
        TensorSpec(name="probabilities", datatype="FP32", shape=[-1, len(classes)]),
    ]


def package(
    spec: TrainSpec, data: PreparedData, result: FitResult, run_id: int, dataset_sha256: str
) -> tuple[Manifest, bytes]:
    n_features = len(data.preprocessing.features)
    manifest = Manifest(
        architecture=spec.model.architecture,
        config=result.config,
        task=spec.task,
        signature=Signature(
            inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, n_features])],
            outputs=output_specs(spec.task, data.classes),
        ),
        preprocessing=data.preprocessing,
        classes=data.classes,
        metrics=result.metrics,
        lineage=Lineage(
            run_id=run_id,
            dataset=spec.dataset,
            dataset_sha256=dataset_sha256,
            spec=spec.model_dump(mode="json"),
        ),
    )
    state = {k: v.detach().contiguous() for k, v in result.model.state_dict().items()}
    return manifest, save(state, metadata={"format": "pt"})
