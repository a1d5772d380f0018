"""Streaming uploads to S3: the bytes of an object are sent while they are still being produced.

A snapshot is compressed and uploaded at the same time: each full part (S3_PART_SIZE_MB) goes up
on a worker thread while the next one is being compressed, at most IN_FLIGHT parts at a time. The
parts are filled into IN_FLIGHT + 1 buffers allocated once and reused, so memory stays at a few
parts whatever the database size (a new 8 MiB allocation per part fragments the heap: at 1 GiB
that alone cost 15 MiB of peak RSS here). An object smaller than one part is sent
with one PUT at commit. Every part carries its SHA-256, which the store verifies; after completing,
the object's size and S3's composite checksum are compared with ours. Nothing is visible before
CompleteMultipartUpload, and a failed or abandoned upload is aborted (prune aborts what a killed
job left behind).
"""

from __future__ import annotations

import base64
import hashlib
import threading
from concurrent.futures import Future, wait
from typing import TYPE_CHECKING, Any

from job.errors import VerificationFailed
from job.progress import Progress
from job.store.base import ObjectInfo
from job.store.threads import DaemonExecutor

if TYPE_CHECKING:
    from job.store.s3 import S3Store

IN_FLIGHT = 2


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


class S3Upload:
    def __init__(self, store: S3Store, key: str) -> None:
        self.store, self.key = store, key
        self.buffer = bytearray(store.part_size)  # the part being filled: buffer[:filled]
        self.filled = 0
        self.spare: list[bytearray] = []  # buffers whose upload is done, to be filled again
        self.size = 0
        self.upload_id: str | None = None
        self.digests: list[bytes] = []  # SHA-256 of each part, in order: S3's composite checksum
        self.parts: dict[int, dict[str, Any]] = {}
        self.pending: list[Future[None]] = []
        self.slots = threading.BoundedSemaphore(IN_FLIGHT)
        self.executor: DaemonExecutor | None = None
        self.progress = Progress("snapshot.upload_progress", 0)
        self.sent = 0
        self.lock = threading.Lock()

    def _doing(self) -> str:
        return f"uploading {self.store.url}/{self.key}"

    def write(self, data: bytes) -> None:
        self.size += len(data)
        view = memoryview(data)
        while view:
            taken = min(len(view), len(self.buffer) - self.filled)
            self.buffer[self.filled : self.filled + taken] = view[:taken]
            self.filled += taken
            view = view[taken:]
            if self.filled == len(self.buffer):
                self._send(self.buffer)
                self.buffer, self.filled = self._free_buffer(), 0

    def _free_buffer(self) -> bytearray:
        """A buffer no part is using: a spare one, else a new one (at most IN_FLIGHT + 1 in all, since
        _send let at most IN_FLIGHT be in flight)."""
        with self.lock:
            if self.spare:
                return self.spare.pop()
        return bytearray(self.store.part_size)

    def _raise_failure(self) -> None:
        for future in self.pending:
            if future.done() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]

    def _start(self) -> None:
        store = self.store
        extra = {**store._extra_args(), **({"ChecksumAlgorithm": "SHA256"} if store.checksums else {})}
        response = store._call(
            "start upload",
            self.key,
            lambda: store.client.create_multipart_upload(
                Bucket=store.bucket, Key=store._key(self.key), **extra
            ),
        )
        self.upload_id = str(response["UploadId"])
        self.executor = DaemonExecutor(max_workers=IN_FLIGHT)

    def _send(self, body: bytes | bytearray) -> None:
        """Hand one part to a worker, waiting (deadline and stop checked) while IN_FLIGHT are busy."""
        self._raise_failure()
        if self.upload_id is None:
            self._start()
        while not self.slots.acquire(timeout=0.2):
            self.store.deadline.check(self._doing())
            self._raise_failure()
        digest = hashlib.sha256(body).digest()
        self.digests.append(digest)
        number = len(self.digests)
        assert self.executor is not None
        self.pending.append(self.executor.submit(self._upload_part, number, body, digest))

    def _upload_part(self, number: int, body: bytes | bytearray, digest: bytes) -> None:
        store = self.store
        try:
            extra: dict[str, Any] = {"ChecksumSHA256": _b64(digest)} if store.checksums else {}
            response = store._call(
                f"upload part {number} of",
                self.key,
                lambda: store.client.upload_part(
                    Bucket=store.bucket,
                    Key=store._key(self.key),
                    UploadId=str(self.upload_id),
                    PartNumber=number,
                    Body=body,  # type: ignore[arg-type]  # botocore takes bytearray too: no copy
                    **extra,
                ),
            )
            with self.lock:
                self.parts[number] = {"PartNumber": number, "ETag": response["ETag"], **extra}
                self.sent += len(body)
                self.progress(self.sent)
                if isinstance(body, bytearray) and len(body) == store.part_size:
                    self.spare.append(body)  # only once no request can still be reading it
        finally:
            self.slots.release()

    def commit(self, *, sha256: str) -> ObjectInfo:
        store = self.store
        try:
            if self.upload_id is None:
                self._put_whole(bytes(memoryview(self.buffer)[: self.filled]), sha256)
                expected = _b64(bytes.fromhex(sha256)) if sha256 else None
            else:
                if self.filled:
                    self._send(bytes(memoryview(self.buffer)[: self.filled]))
                    self.filled = 0
                self._wait_for_parts()
                parts = [self.parts[n] for n in sorted(self.parts)]
                store._call(
                    "complete upload",
                    self.key,
                    lambda: store.client.complete_multipart_upload(
                        Bucket=store.bucket,
                        Key=store._key(self.key),
                        UploadId=str(self.upload_id),
                        MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                    ),
                )
                composite = hashlib.sha256(b"".join(self.digests)).digest()
                expected = f"{_b64(composite)}-{len(self.digests)}"
        except BaseException:
            self.abort()
            raise
        finally:
            if self.executor is not None:
                self.executor.shutdown(wait=False)
        return self._verify(expected)

    def _put_whole(self, body: bytes, sha256: str) -> None:
        """An object smaller than one part: one PUT, which the store checks against our SHA-256."""
        store = self.store
        extra = store._extra_args()
        if store.checksums and sha256:
            extra["ChecksumSHA256"] = _b64(bytes.fromhex(sha256))
        store._call(
            "put",
            self.key,
            lambda: store.client.put_object(
                Bucket=store.bucket, Key=store._key(self.key), Body=body, **extra
            ),
        )

    def _wait_for_parts(self) -> None:
        deadline = self.store.deadline
        while True:
            _, not_done = wait(self.pending, timeout=min(max(deadline.remaining(), 0), 0.5))
            self._raise_failure()
            if not not_done:
                return
            deadline.check(self._doing())

    def _verify(self, expected: str | None) -> ObjectInfo:
        """The object is there with our size, and with our checksum where the store reports one."""
        store = self.store
        info = store.head(self.key)
        if info is None or info.size != self.size:
            raise VerificationFailed(
                f"{store.url}/{self.key} has {info.size if info else 'no'} bytes after upload, "
                f"expected {self.size}"
            )
        if not store.checksums or expected is None:
            return info
        reported = store._head_checksum(self.key)
        if reported is not None and reported.split("-")[0] != expected.split("-")[0]:
            raise VerificationFailed(
                f"{store.url}/{self.key}: the store reports checksum {reported}, expected {expected}"
            )
        return ObjectInfo(info.key, info.size, info.modified, checksum_verified=reported is not None)

    def abort(self) -> None:
        """Stop the workers and tell the store to drop the parts, even past the deadline or after a
        stop (S3Store.cleanup bounds it); never raises."""
        if self.executor is not None:
            self.executor.shutdown(wait=False)
        if self.upload_id is None:
            return
        upload_id, self.upload_id = self.upload_id, None
        store = self.store
        store.cleanup(
            "abort upload",
            self.key,
            lambda: store.client.abort_multipart_upload(
                Bucket=store.bucket, Key=store._key(self.key), UploadId=upload_id
            ),
        )
