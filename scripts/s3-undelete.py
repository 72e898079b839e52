#!/usr/bin/env python3
"""Bring back registry objects deleted from a versioned S3 bucket since a given time.

A delete in a versioned bucket (garbage collection, `DELETE /v2/.../manifests/...`, a mistaken
`aws s3 rm`) only adds a delete marker on top of the object's versions. Removing a marker makes the
version below it current again, byte for byte. This tool removes the markers newer than --since
under --prefix, so everything deleted after that moment is back; objects deleted earlier stay
deleted. Run it with the registry read-only (docs/runbooks.md, "Restore").

    s3-undelete.py --bucket example-cicd-registry-prod-eu-west-1 --prefix registry/docker/registry/v2/ \
        --since 2026-11-26T03:00:00Z [--dry-run]

Noncurrent versions expire after s3NoncurrentVersionDays: that is the restore window.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from typing import Any, Iterator


def delete_markers_since(s3: Any, bucket: str, prefix: str, since: datetime) -> Iterator[tuple[str, str]]:
    """(key, version id) of every current delete marker under prefix created at or after since."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for marker in page.get("DeleteMarkers", []):
            if marker["IsLatest"] and marker["LastModified"] >= since:
                yield marker["Key"], marker["VersionId"]


def undelete(s3: Any, bucket: str, prefix: str, since: datetime, dry_run: bool = False) -> list[str]:
    """Remove those delete markers; returns the keys that are current again (or would be)."""
    restored = []
    for key, version_id in list(delete_markers_since(s3, bucket, prefix, since)):
        if not dry_run:
            s3.delete_object(Bucket=bucket, Key=key, VersionId=version_id)
        restored.append(key)
    return restored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", required=True, help="the registry's root directory without the leading slash, "
                                                         "plus docker/registry/v2/")
    parser.add_argument("--since", required=True, help="ISO 8601 time, e.g. 2026-11-26T03:00:00Z")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    since = datetime.fromisoformat(args.since.replace("Z", "+00:00"))
    if since.tzinfo is None:
        since = since.replace(tzinfo=timezone.utc)

    import boto3

    keys = undelete(boto3.client("s3"), args.bucket, args.prefix, since, args.dry_run)
    for key in keys:
        print(("would restore " if args.dry_run else "restored ") + key)
    print(f"{len(keys)} objects {'would be ' if args.dry_run else ''}restored", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
