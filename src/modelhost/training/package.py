"""Turn a fitted model into a version: a manifest (signature, preprocessing, classes,
metrics, lineage) and safetensors weights — plus ``tokenizer.json`` for text models. No pickle."""

from __future__ import annotations

from safetensors.torch import save

from modelhost.datasets.tokenizers import TextPreprocessing
from modelhost.registry.manifest import TOKENIZER_FILE, WEIGHTS_FILE, Lineage, Manifest, Signature, TensorSpec
from modelhost.training.data import Labels, PreparedData
from modelhost.training.loop import FitResult
from modelhost.training.spec import TrainSpec


def output_specs(task: str, classes: Labels | None, out_size: int = 1) -> list[TensorSpec]:
    if task == "language_model":
        return [TensorSpec(name="logits", datatype="FP32", shape=[-1, -1, out_size])]
    if task == "regression" or not classes:
        return [
            TensorSpec(name="prediction", datatype="FP32", shape=[-1] if out_size == 1 else [-1, out_size])
        ]
    label_type = {int: "INT64", float: "FP64", str: "BYTES"}[type(classes[0])]
    return [
        TensorSpec(name="label", datatype=label_type, shape=[-1]),
        TensorSpec(name="probabilities", datatype="FP32", shape=[-1, len(classes)]),
    ]


def package(
    spec: TrainSpec, data: PreparedData, result: FitResult, run_id: int, dataset_sha256: str
) -> tuple[Manifest, dict[str, bytes]]:
    """The manifest and the files of the version: weights (and the tokenizer of text models)."""
    out_size = int(result.config.get("vocab_size") or result.config.get("output_size") or 1)
    manifest = Manifest(
        architecture=spec.model.architecture,
        config=result.config,
        task=spec.task,
        signature=Signature(inputs=[data.input], outputs=output_specs(spec.task, data.classes, out_size)),
        preprocessing=data.preprocessing,
        classes=data.classes,
        metrics=result.metrics,
        confusion_matrix=result.confusion,
        lineage=Lineage(
            run_id=run_id,
            dataset=spec.dataset,
            dataset_sha256=dataset_sha256,
            spec=spec.model_dump(mode="json"),
        ),
    )
    # clone: tied weights (GPT's embedding and head) share memory, which safetensors refuses
    state = {k: v.detach().clone().contiguous() for k, v in result.model.state_dict().items()}
    files = {WEIGHTS_FILE: save(state, metadata={"format": "pt"})}
    if isinstance(data.preprocessing, TextPreprocessing):
        files[TOKENIZER_FILE] = data.preprocessing.tokenizer_json().encode()
    return manifest, files
