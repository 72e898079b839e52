"""A minimal OCI Distribution client (requests + basic auth) and builders for test images and signatures.

Only what the harness needs: blob upload (monolithic and chunked), manifest push/get/delete, blob get/head, tag
listing. Every unexpected HTTP status raises RegistryError with the status and the registry's error body.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping
from urllib.parse import urljoin

import requests
from requests.structures import CaseInsensitiveDict

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
COSIGN_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
EMPTY_JSON = b"{}"

MANIFEST_ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST])
DEFAULT_CHUNK_THRESHOLD = 8 * 1024 * 1024  # blobs larger than this are uploaded with PATCH chunks
DEFAULT_CHUNK_SIZE = 5 * 1024 * 1024       # >= 5 MiB: the S3 driver's minimum multipart part size


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data), **extra}


class RegistryError(Exception):
    """An unexpected HTTP status from the registry, carrying the status and the registry's error body."""

    def __init__(self, method: str, url: str, status: int, body: str, headers: Mapping[str, str] | None = None):
        self.method, self.url, self.status, self.body = method, url, status, body
        self.headers = CaseInsensitiveDict(headers or {})
        super().__init__(f"{method} {url} -> HTTP {status}: {body[:2000]}")

    @property
    def error_codes(self) -> list[str]:
        """The `errors[].code` values of an OCI error body (empty if the body is not one)."""
        try:
            return [e.get("code", "") for e in json.loads(self.body).get("errors", [])]
        except (ValueError, AttributeError):
            return []


@dataclass
class Blob:
    data: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return sha256_digest(self.data)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return descriptor(self.media_type, self.data, **extra)


@dataclass
class Manifest:
    """A manifest as stored or fetched: raw bytes (digest is over these exact bytes) plus its media type."""
    data: bytes
    media_type: str
    digest: str = ""

    def __post_init__(self) -> None:
        if not self.digest:
            self.digest = sha256_digest(self.data)

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.data)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return descriptor(self.media_type, self.data, **extra)


@dataclass
class Image:
    """A manifest plus the blobs (config first, then layers) it references."""
    manifest: Manifest
    blobs: list[Blob] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def config(self) -> Blob:
        return self.blobs[0]

    @property
    def layers(self) -> list[Blob]:
        return self.blobs[1:]


class OciClient:
    def __init__(self, base_url: str, username: str | None = None, password: str | None = None,
                 timeout: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # loopback only: ignore proxy variables and netrc
        if username is not None:
            self.session.auth = (username, password or "")

    # -- plumbing -----------------------------------------------------------------------------------------
    def _url(self, path_or_url: str) -> str:
        return urljoin(self.base_url + "/", path_or_url)

    def request(self, method: str, path_or_url: str, expect: Iterable[int] = (200,), **kwargs: Any
                ) -> requests.Response:
        url = self._url(path_or_url)
        kwargs.setdefault("timeout", self.timeout)
        resp = self.session.request(method, url, **kwargs)
        if resp.status_code not in tuple(expect):
            body = "" if kwargs.get("stream") and method == "HEAD" else resp.text
            raise RegistryError(method, url, resp.status_code, body, resp.headers)
        return resp

    def ping(self) -> requests.Response:
        """GET /v2/ (200 when authenticated or auth is off)."""
        return self.request("GET", "/v2/")

    # -- blobs ---------------------------------------------------------------------------------------------
    def head_blob(self, repo: str, digest: str) -> requests.Response | None:
        """HEAD a blob: the response (Content-Length, Docker-Content-Digest) if present, None on 404."""
        resp = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", expect=(200, 404), allow_redirects=True)
        return resp if resp.status_code == 200 else None

    def blob_exists(self, repo: str, digest: str) -> bool:
        return self.head_blob(repo, digest) is not None

    def push_blob(self, repo: str, data: bytes, *, chunk_size: int | None = None,
                  chunk_threshold: int = DEFAULT_CHUNK_THRESHOLD) -> str:
        """Upload a blob; monolithic PUT when small, PATCH chunks + final PUT when large or chunk_size given."""
        digest = sha256_digest(data)
        resp = self.request("POST", f"/v2/{repo}/blobs/uploads/", expect=(202,))
        location = resp.headers["Location"]
        if chunk_size is None and len(data) > chunk_threshold:
            chunk_size = DEFAULT_CHUNK_SIZE
        if chunk_size:
            offset = 0
            while offset < len(data):
                chunk = data[offset:offset + chunk_size]
                resp = self.request(
                    "PATCH", location, expect=(202,), data=chunk,
                    headers={"Content-Type": "application/octet-stream",
                             "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                             "Content-Length": str(len(chunk))})
                location = resp.headers["Location"]
                offset += len(chunk)
            body = b""
        else:
            body = data
        resp = self.request("PUT", location, expect=(201,), params={"digest": digest}, data=body,
                            headers={"Content-Type": "application/octet-stream",
                                     "Content-Length": str(len(body))})
        returned = resp.headers.get("Docker-Content-Digest", digest)
        if returned != digest:
            raise AssertionError(f"registry stored blob as {returned}, expected {digest}")
        return digest

    def get_blob(self, repo: str, digest: str, chunk: int = 1024 * 1024) -> bytes:
        """Stream a blob and verify it against its digest (follows redirects to storage if any)."""
        resp = self.request("GET", f"/v2/{repo}/blobs/{digest}", stream=True)
        algorithm, _, expected = digest.partition(":")
        hasher = hashlib.new(algorithm)
        buf = io.BytesIO()
        with resp:
            for part in resp.iter_content(chunk):
                hasher.update(part)
                buf.write(part)
        if hasher.hexdigest() != expected:
            raise AssertionError(f"blob {digest} from {repo} has digest {algorithm}:{hasher.hexdigest()}")
        return buf.getvalue()

    # -- manifests -----------------------------------------------------------------------------------------
    def push_manifest(self, repo: str, reference: str, manifest: Manifest) -> str:
        resp = self.request("PUT", f"/v2/{repo}/manifests/{reference}", expect=(201,), data=manifest.data,
                            headers={"Content-Type": manifest.media_type})
        returned = resp.headers.get("Docker-Content-Digest", manifest.digest)
        if returned != manifest.digest:
            raise AssertionError(f"registry stored manifest as {returned}, expected {manifest.digest}")
        return manifest.digest

    def get_manifest(self, repo: str, reference: str, accept: str = MANIFEST_ACCEPT) -> Manifest:
        """GET a manifest by tag or digest: exact bytes, digest (verified) and media type."""
        resp = self.request("GET", f"/v2/{repo}/manifests/{reference}", headers={"Accept": accept})
        data = resp.content
        digest = sha256_digest(data)
        header = resp.headers.get("Docker-Content-Digest")
        if header and header != digest:
            raise AssertionError(f"manifest {repo}:{reference} header digest {header} != body digest {digest}")
        if reference.startswith("sha256:") and reference != digest:
            raise AssertionError(f"manifest {repo}@{reference} body has digest {digest}")
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        return Manifest(data=data, media_type=media_type, digest=digest)

    def manifest_exists(self, repo: str, reference: str, accept: str = MANIFEST_ACCEPT) -> bool:
        resp = self.request("HEAD", f"/v2/{repo}/manifests/{reference}", expect=(200, 404),
                            headers={"Accept": accept})
        return resp.status_code == 200

    def delete_manifest(self, repo: str, digest: str) -> None:
        self.request("DELETE", f"/v2/{repo}/manifests/{digest}", expect=(202,))

    def list_tags(self, repo: str) -> list[str]:
        return self.request("GET", f"/v2/{repo}/tags/list").json().get("tags") or []

    # -- composites ----------------------------------------------------------------------------------------
    def push_image(self, repo: str, image: Image, tag: str | None = None) -> str:
        """Push all blobs of `image` (skipping ones present), then its manifest by tag (or by digest)."""
        for blob in image.blobs:
            if not self.blob_exists(repo, blob.digest):
                self.push_blob(repo, blob.data)
        return self.push_manifest(repo, tag or image.digest, image.manifest)

    def pull_image(self, repo: str, reference: str) -> Image:
        """Fetch a single-platform image manifest and all its blobs (each verified against its digest)."""
        manifest = self.get_manifest(repo, reference)
        doc = manifest.json
        blobs = [Blob(self.get_blob(repo, d["digest"]), d["mediaType"]) for d in [doc["config"], *doc["layers"]]]
        return Image(manifest=manifest, blobs=blobs)


# -- builders ------------------------------------------------------------------------------------------------
def _image_manifest(config: Blob, layers: list[Blob], *, subject: dict | None = None,
                    artifact_type: str | None = None, annotations: dict[str, str] | None = None,
                    layer_annotations: list[dict[str, str] | None] | None = None) -> Manifest:
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
    if artifact_type:
        doc["artifactType"] = artifact_type
    doc["config"] = config.descriptor()
    doc["layers"] = []
    for i, layer in enumerate(layers):
        extra = (layer_annotations[i] if layer_annotations else None) or {}
        doc["layers"].append(layer.descriptor(**({"annotations": extra} if extra else {})))
    if subject:
        doc["subject"] = subject
    if annotations:
        doc["annotations"] = annotations
    return Manifest(canonical_json(doc), OCI_MANIFEST)


def make_image(layer_bytes: bytes, *, compress: bool = True, architecture: str = "amd64", os: str = "linux"
               ) -> Image:
    """An OCI image: config + one layer (gzip-compressed unless compress=False) + OCI image manifest.

    `layer_bytes` is used as the uncompressed layer content as-is (the registry never unpacks layers).
    """
    layer_data = gzip.compress(layer_bytes, mtime=0) if compress else layer_bytes
    layer = Blob(layer_data, OCI_LAYER_GZIP if compress else OCI_LAYER)
    config_doc = {
        "architecture": architecture, "os": os, "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer_bytes)]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "registry-iac test harness"}],
    }
    config = Blob(canonical_json(config_doc), OCI_CONFIG)
    return Image(manifest=_image_manifest(config, [layer]), blobs=[config, layer])


def cosign_signature_tag(digest: str) -> str:
    """Cosign's tag for signatures of `digest`: sha256-<hex>.sig"""
    algorithm, _, hex_ = digest.partition(":")
    return f"{algorithm}-{hex_}.sig"


def referrers_tag(digest: str) -> str:
    """OCI 1.1 referrers tag schema fallback tag for `digest`: sha256-<hex>"""
    algorithm, _, hex_ = digest.partition(":")
    return f"{algorithm}-{hex_}"


def make_cosign_signature(image_digest: str, docker_reference: str, signature: bytes = b"not-a-real-signature"
                          ) -> Image:
    """A Cosign-style signature manifest: one simplesigning payload layer annotated with a base64 signature."""
    payload = canonical_json({
        "critical": {"identity": {"docker-reference": docker_reference},
                     "image": {"docker-manifest-digest": image_digest},
                     "type": "cosign container image signature"},
        "optional": None,
    })
    layer = Blob(payload, COSIGN_SIMPLESIGNING)
    config_doc = {"architecture": "", "os": "", "config": {}, "created": "0001-01-01T00:00:00Z",
                  "history": [{"created": "0001-01-01T00:00:00Z"}],
                  "rootfs": {"type": "layers", "diff_ids": [layer.digest]}}
    config = Blob(canonical_json(config_doc), OCI_CONFIG)
    manifest = _image_manifest(config, [layer], layer_annotations=[
        {COSIGN_SIGNATURE_ANNOTATION: base64.b64encode(signature).decode()}])
    return Image(manifest=manifest, blobs=[config, layer])


def make_referrer_artifact(subject: Manifest, artifact_type: str, payload: bytes,
                           payload_media_type: str = "application/octet-stream",
                           annotations: dict[str, str] | None = None) -> Image:
    """An OCI 1.1 artifact manifest (empty config, one payload layer) whose `subject` is the given manifest."""
    config = Blob(EMPTY_JSON, OCI_EMPTY)
    layer = Blob(payload, payload_media_type)
    manifest = _image_manifest(config, [layer], subject=subject.descriptor(), artifact_type=artifact_type,
                               annotations=annotations)
    return Image(manifest=manifest, blobs=[config, layer])


def make_referrers_index(referrers: list[Image]) -> Manifest:
    """The OCI index stored under referrers_tag(subject digest): one descriptor per referrer manifest."""
    manifests = []
    for ref in referrers:
        doc = ref.manifest.json
        extra: dict[str, Any] = {"artifactType": doc.get("artifactType") or doc["config"]["mediaType"]}
        if doc.get("annotations"):
            extra["annotations"] = doc["annotations"]
        manifests.append(ref.manifest.descriptor(**extra))
    return Manifest(canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}), OCI_INDEX)
