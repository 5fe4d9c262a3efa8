"""Artifact storage: verified blobs on the local disk or S3, picked by :func:`open_artifacts`,
encrypted at rest when :func:`open_store` finds a key in the settings."""

from modelhost.artifacts.base import ArtifactStore, Digest, open_artifacts, open_store, validate_key

__all__ = ["ArtifactStore", "Digest", "open_artifacts", "open_store", "validate_key"]
