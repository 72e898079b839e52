"""The promtool unit tests that apply to one stack, from its settings.

The YAML files beside this module hold the expected alerts; the values that differ between stacks
(namespace, runbook document, bucket and its budget, volume claim, object names) are ``${...}``
placeholders filled from the stack's settings. Which files apply follows from the settings too: every
stack gets ``common``, then one per storage mode, and ``replicated-s3`` for an S3 bucket with more than
one replica (the prod shape). A new stack file needs no new test file unless it has a new shape, which
``test_every_alert_has_a_firing_and_a_silent_unit_test`` then reports.
"""

from __future__ import annotations

from pathlib import Path
from string import Template

from components.settings import FilesystemStorage, S3Storage, Settings

DIRECTORY = Path(__file__).parent


def test_files(settings: Settings) -> list[str]:
    files = ["common.test.yaml"]
    if isinstance(settings.storage, FilesystemStorage):
        files.append("storage-filesystem.test.yaml")
    elif isinstance(settings.storage, S3Storage) and settings.replicas > 1:
        files.append("replicated-s3.test.yaml")
    return files


def values(settings: Settings) -> dict[str, str]:
    names = settings.names
    budget = settings.s3_storage_budget_bytes or 0
    return {
        "namespace": settings.namespace,
        "runbook_base_url": settings.runbook_base_url,
        "metrics_job": names.metrics_service,
        "gc_cronjob": names.gc,
        "claim": names.data_claim(),
        "bucket": getattr(settings.storage, "bucket", ""),
        "budget": str(budget),
        "bytes_85_percent": str(budget * 85 // 100),
        "bytes_50_percent": str(budget // 2),
    }


def render(settings: Settings, directory: Path) -> list[str]:
    """Write the stack's test files into ``directory``; returns their names."""
    files = test_files(settings)
    for name in files:
        (directory / name).write_text(Template((DIRECTORY / name).read_text()).substitute(values(settings)))
    return files
