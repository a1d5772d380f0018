"""S3 and S3-compatible stores through boto3. Standard AWS configuration applies unchanged
(credential chain, AWS_REGION, AWS_ENDPOINT_URL(_S3), AWS_CA_BUNDLE); see job.retry for how
botocore's and tenacity's retries share the work.

The run's deadline holds for every operation, transfers included: no request starts after it, no
request waits for an answer longer than the time left, and an operation still blocked on the
network when it passes is left behind on daemon threads (Deadline.bound, DaemonExecutor).
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import http.client
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import boto3
from boto3.s3.transfer import ProgressCallbackInvoker, TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    ResponseStreamingError,
    SSLError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from s3transfer.futures import TransferFuture
from s3transfer.manager import TransferManager
from urllib3.exceptions import HTTPError as Urllib3Error

from job import __version__, retry
from job.config import S3Options
from job.deadline import Deadline
from job.errors import JobError, StoreError, UsageError
from job.log import get_logger
from job.store.base import ObjectInfo, upload_file
from job.store.s3_upload import S3Upload
from job.store.threads import DaemonExecutor

T = TypeVar("T")
MB = 1024 * 1024
CONNECT_TIMEOUT_S, READ_TIMEOUT_S = 5, 20
CLEANUP_S = 5.0  # what an abandoned upload's abort may take, past the deadline or a stop
THROTTLING = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"}
TRANSIENT_CODES = THROTTLING | {"RequestTimeout", "InternalError", "ServiceUnavailable", "BadDigest"}
HINTS = {
    "AccessDenied": "the credentials lack permission for this operation: see the IAM policy in README",
    "InvalidAccessKeyId": "AWS_ACCESS_KEY_ID is not known to the store",
    "SignatureDoesNotMatch": "AWS_SECRET_ACCESS_KEY does not match AWS_ACCESS_KEY_ID",
    "NoSuchBucket": "the bucket does not exist: check SNAPSHOT_STORE, AWS_REGION and AWS_ENDPOINT_URL_S3",
    "AuthorizationHeaderMalformed": "check AWS_REGION for this bucket",
    "PermanentRedirect": "the bucket is in another region: set AWS_REGION",
    "InvalidRequest": "the store rejected the request: for stores that do not support boto3's "
    "default checksums set S3_CHECKSUM_MODE=when_required",
}


# The libraries under the store: any exception of theirs is mapped to a documented exit code (see
# S3Store._call), never left to be exit 1, whatever its type and however deep it was raised.
LIBRARIES = ("boto3", "botocore", "s3transfer", "urllib3")
STANDARD_ERRORS = (CancelledError, http.client.HTTPException, OSError, ValueError)  # raised by them too


def _from_library(exc: BaseException) -> bool:
    return isinstance(exc, STANDARD_ERRORS) or any(
        cls.__module__.split(".")[0] in LIBRARIES for cls in type(exc).__mro__
    )


def _unwrap(exc: BaseException) -> BaseException:
    """The error inside boto3's and s3transfer's RetriesExceededError."""
    last = getattr(exc, "last_exception", None)
    return last if isinstance(last, BaseException) else exc


def _code(exc: ClientError) -> tuple[str, int]:
    error = exc.response.get("Error", {})
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return str(error.get("Code", "")), status


def is_transient(exc: BaseException) -> bool:
    """Worth another try: throttling, 5xx, timeouts, dropped connections, truncated bodies."""
    exc = _unwrap(exc)
    if isinstance(exc, ClientError):
        code, status = _code(exc)
        return status >= 500 or code in TRANSIENT_CODES
    if isinstance(exc, SSLError):
        return False
    return isinstance(
        exc,
        BotoConnectionError
        | HTTPClientError
        | ResponseStreamingError
        | IncompleteReadError
        | Urllib3Error
        | http.client.IncompleteRead
        | ConnectionError
        | TimeoutError,
    )


def _composite_sha256(path: Path, part_size: int) -> str:
    """S3's checksum of a multipart upload: SHA-256 over the parts' SHA-256 digests, '-N'."""
    digests = []
    with path.open("rb") as f:
        while chunk := f.read(part_size):
            digests.append(hashlib.sha256(chunk).digest())
    return f"{base64.b64encode(hashlib.sha256(b''.join(digests)).digest()).decode()}-{len(digests)}"


class S3Store:
    def __init__(self, bucket: str, prefix: str, options: S3Options, deadline: Deadline) -> None:
        self.bucket, self.prefix, self.options, self.deadline = bucket, prefix, options, deadline
        self.part_size = options.part_size_mb * MB
        config = Config(
            retries={"mode": "standard", "total_max_attempts": retry.BOTOCORE_ATTEMPTS},
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
            s3={  # type: ignore[arg-type]
                "addressing_style": options.addressing_style,
                # With checksums on, parts and objects carry a signed checksum header the store
                # verifies, so their bodies are not hashed again for the signature (botocore does
                # so only over plain HTTP). CompleteMultipartUpload's body then goes unsigned: the
                # object's size and composite checksum are checked after it.
                **({"payload_signing_enabled": False} if options.checksum_mode == "when_supported" else {}),
            },
            request_checksum_calculation=options.checksum_mode,  # type: ignore[arg-type]
            response_checksum_validation=options.checksum_mode,  # type: ignore[arg-type]
            user_agent_extra=f"relayer-job/{__version__}",
        )
        try:
            self.client = boto3.session.Session().client("s3", config=config)
        except (ValueError, BotoCoreError) as exc:
            raise UsageError(
                f"cannot set up the S3 client: {exc}; check AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 "
                "(a full URL such as https://host:port) and AWS_REGION"
            ) from exc
        self.cleaning = threading.local()
        self.client.meta.events.register("before-send.s3", self._before_send)
        self.checksums = options.checksum_mode == "when_supported"
        self.transfer_config = TransferConfig(
            multipart_threshold=self.part_size, multipart_chunksize=self.part_size, max_concurrency=4
        )

    def _before_send(self, request: Any, **_: Any) -> None:
        """Before every HTTP request, retries and transfer parts included: none starts after the
        deadline, and none waits longer for an answer than the time left; except the cleanup of an
        abandoned upload (`cleanup`), which gets a few seconds of its own even after a stop."""
        remaining = CLEANUP_S if getattr(self.cleaning, "active", False) else self.deadline.remaining()
        if remaining <= 0:
            raise self.deadline.exceeded(f"talking to {self.url}")
        context = getattr(request, "context", None)
        if isinstance(context, dict):
            context["read_timeout"] = min(READ_TIMEOUT_S, remaining)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, operation: str, key: str, fn: Callable[[], T]) -> T:
        """One store operation with retries; failures become StoreError (exit 6) saying what to fix."""
        doing = f"{operation} {self.url}/{key}"
        try:
            return self.deadline.bound(
                lambda: retry.call(doing, fn, transient=is_transient, deadline=self.deadline), doing
            )
        except JobError:
            raise
        except Exception as exc:
            if not _from_library(exc):
                raise
            raise self._error(operation, key, _unwrap(exc)) from exc

    def _transfer(self, start: Callable[[TransferManager], TransferFuture]) -> None:
        """One s3transfer upload or download, on daemon threads (see job.store.threads)."""
        manager = TransferManager(self.client, self.transfer_config, executor_cls=DaemonExecutor)
        try:
            start(manager).result()
        finally:
            manager.shutdown()

    def _error(self, operation: str, key: str, exc: BaseException) -> StoreError:
        where = f"{self.url}/{key}"
        if isinstance(exc, ClientError):
            code, status = _code(exc)
            hint = HINTS.get(code) or (
                "the store kept failing; retries exhausted" if is_transient(exc) else "request rejected"
            )
            return StoreError(f"{operation} {where} failed: {code or status} ({status}): {hint}")
        if isinstance(exc, NoCredentialsError):
            return StoreError(
                f"{operation} {where}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or attach a role)"
            )
        if isinstance(exc, SSLError):
            return StoreError(
                f"{operation} {where}: TLS to the endpoint failed ({exc}); check that "
                "AWS_ENDPOINT_URL_S3 uses the right scheme and port (http:// vs https://), and for a "
                "private CA point AWS_CA_BUNDLE at it"
            )
        if isinstance(exc, EndpointConnectionError):
            return StoreError(
                f"{operation} {where}: cannot connect to {exc.kwargs.get('endpoint_url')} after retries; "
                "check AWS_ENDPOINT_URL_S3 / AWS_REGION and that the store is reachable"
            )
        return StoreError(f"{operation} {where} failed after retries: {type(exc).__name__}: {exc}")

    def _extra_args(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.options.sse:
            extra["ServerSideEncryption"] = self.options.sse
        if self.options.sse_kms_key_id:
            extra["SSEKMSKeyId"] = self.options.sse_kms_key_id
        if self.options.storage_class:
            extra["StorageClass"] = self.options.storage_class
        return extra

    def local_path(self, key: str) -> Path | None:
        del key
        return None

    def open_upload(self, key: str) -> S3Upload:
        return S3Upload(self, key)

    def put_file(self, key: str, source: Path, *, sha256: str) -> ObjectInfo:
        def check() -> None:
            self.deadline.check(f"uploading {self.url}/{key}")

        return upload_file(self, key, source, sha256=sha256, check=check)

    def cleanup(self, what: str, key: str, fn: Callable[[], object]) -> None:
        """Best effort, bounded by CLEANUP_S whatever the deadline (a stopped or timed-out run still
        tells the store to drop what it abandoned); failures are logged, never raised: prune
        cleans up what is left."""
        outcome: dict[str, BaseException] = {}

        def attempt() -> None:
            self.cleaning.active = True
            try:
                fn()
            except BaseException as exc:  # reported below
                outcome["error"] = exc

        worker = threading.Thread(target=contextvars.copy_context().run, args=(attempt,), daemon=True)
        worker.start()
        worker.join(CLEANUP_S)
        if worker.is_alive() or "error" in outcome:
            error = outcome.get("error")
            get_logger().warning(
                "store.cleanup_failed",
                operation=what,
                key=key,
                error=f"{type(error).__name__}: {error}" if error else f"no answer within {CLEANUP_S:g}s",
                note="prune removes what is left",
            )

    def _head_checksum(self, key: str) -> str | None:
        response = self._call(
            "head",
            key,
            lambda: self.client.head_object(Bucket=self.bucket, Key=self._key(key), ChecksumMode="ENABLED"),
        )
        value = response.get("ChecksumSHA256")
        return str(value) if value else None

    def put_bytes(self, key: str, data: bytes) -> None:
        extra = self._extra_args()
        if self.checksums:
            extra["ChecksumSHA256"] = base64.b64encode(hashlib.sha256(data).digest()).decode()
        self._call(
            "put",
            key,
            lambda: self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra),
        )

    def head(self, key: str) -> ObjectInfo | None:
        def head() -> ObjectInfo | None:
            try:
                response = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if _code(exc)[1] == 404:
                    return None
                raise
            return ObjectInfo(key, int(response["ContentLength"]), response["LastModified"])

        return self._call("head", key, head)

    def get_bytes(self, key: str) -> bytes:
        def get() -> bytes:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
            return body

        return self._call("get", key, get)

    def download(self, key: str, destination: Path) -> None:
        def check(_count: int) -> None:
            self.deadline.check("downloading the snapshot")

        self._call(
            "download",
            key,
            lambda: self._transfer(
                lambda manager: manager.download(
                    self.bucket, self._key(key), str(destination), None, [ProgressCallbackInvoker(check)]
                )
            ),
        )

    def list_objects(self, prefix: str) -> Iterator[ObjectInfo]:
        def collect() -> list[ObjectInfo]:
            found = []
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for obj in page.get("Contents", []):
                    relative = obj["Key"][len(self.prefix) + 1 :] if self.prefix else obj["Key"]
                    found.append(ObjectInfo(relative, int(obj["Size"]), obj["LastModified"]))
            return found

        yield from self._call("list", prefix, collect)

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            objects = {"Objects": [{"Key": self._key(k)} for k in batch], "Quiet": True}
            response = self._call(
                "delete",
                batch[0],
                lambda objects=objects: self.client.delete_objects(  # type: ignore[misc]
                    Bucket=self.bucket, Delete=objects
                ),
            )
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                raise StoreError(
                    f"delete {self.url}/{first.get('Key')} failed: {first.get('Code')}: "
                    f"{HINTS.get(str(first.get('Code')), first.get('Message'))}"
                )

    def abort_stale_uploads(self, prefix: str, older_than: datetime) -> list[str]:
        def stale() -> list[Any]:
            paginator = self.client.get_paginator("list_multipart_uploads")
            return [
                upload
                for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix))
                for upload in page.get("Uploads", [])
                if upload["Initiated"] < older_than
            ]

        aborted = []
        for upload in self._call("list uploads", prefix, stale):
            self._call(
                "abort upload",
                upload["Key"],
                lambda upload=upload: self.client.abort_multipart_upload(  # type: ignore[misc]
                    Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                ),
            )
            aborted.append(str(upload["Key"]))
        return aborted
