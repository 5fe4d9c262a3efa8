"""Artifact storage: verified blobs on the local disk or S3, picked by :func:`open_artifacts`."""

from modelhost.artifacts.base import ArtifactStore, Digest, open_artifacts, validate_key

__all__ = ["ArtifactStore", "Digest", "open_artifacts", "validate_key"]
