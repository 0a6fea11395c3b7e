"""Fold checkpoints mirrored to an object store, so a retried (preempted) fold pod resumes.

Why: on a cluster a ``train_fold`` task writes straight into its KFP output artifact directory,
and a retried pod gets a fresh, empty one; ``checkpoint_latest.pth`` died with the old pod and the
fold starts again from epoch 0. With ``segmentation.checkpoint_uri`` set, every checkpoint the
trainer writes (every ``segmentation.save_every`` epochs) is also uploaded, and before training a
fold whose directory holds no checkpoint downloads the last uploaded one, so
:func:`cosmos.segmentation.training.train_fold`'s own resume path takes over.

Layout (one prefix per pipeline run, round and fold; stable across retries of one task)::

    <checkpoint_uri>/<pipeline run id>/round_<k>/fold_<f>/
        manifest.json                       written LAST: which upload is complete
        epoch_<NNNN>/checkpoint_latest.pth  nnU-Net's checkpoint after NNNN finished epochs
        epoch_<NNNN>/.cosmos_init.json      how the fold was initialised (warm start), when present

Atomicity: each object PUT is atomic, but a checkpoint and its init record are two objects and an
upload may be killed between them, so the files go under a new ``epoch_<NNNN>/`` folder first and
the manifest (one small object naming their keys, sizes and SHA-256) is written last. A reader
trusts only the manifest; older folders are deleted after the manifest moves on. A kill at any
point leaves the previous complete checkpoint in place. After the fold finishes, its prefix is
deleted (the model itself is the task's output artifact).

``checkpoint_uri`` may also be a local directory (a mounted volume); the same layout is used.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from cosmos.data import storage
from cosmos.errors import CosmosError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1
CHECKPOINT = "checkpoint_latest.pth"  # = training.LATEST_CHECKPOINT (not imported: training imports us)
INIT_RECORD = ".cosmos_init.json"  # = training.INIT_RECORD
#: What train_fold's resume path reads from the fold directory (the checkpoint must exist).
RESUME_FILES = (CHECKPOINT, INIT_RECORD)

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def fold_checkpoint_uri(base: str, run_id: str, round_index: int, fold: int) -> str | None:
    """``<base>/<run_id>/round_<k>/fold_<f>`` or None when sync is off (no ``base``, or no run id).

    ``run_id`` is the pipeline run's id (KFP's ``PIPELINE_JOB_ID_PLACEHOLDER``): the same for every
    retry of a task, different for every run, so one run never resumes another run's fold. An id
    that is not a plain token (e.g. an unresolved ``{{$.pipeline_job_uuid}}``) is refused: it
    would put every run under one key.
    """
    base = (base or "").strip()
    if not base:
        return None
    run_id = (run_id or "").strip()
    if not run_id:
        log.info("fold checkpoints stay local: no pipeline run id (a local run resumes from its keyed work dir)")
        return None
    if not _RUN_ID.fullmatch(run_id):
        raise CosmosError(
            f"pipeline run id {run_id!r} cannot key fold checkpoints (expected letters, digits, "
            "'.', '_' or '-'; is the KFP placeholder unresolved?)"
        )
    return f"{base.rstrip('/')}/{run_id}/round_{int(round_index)}/fold_{int(fold)}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _Store:
    """The few object operations the sync needs, on ``s3://`` (boto3 via cosmos.data.storage) or a directory."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        self.s3 = storage.is_s3(uri)
        if self.s3:
            self.bucket, self.prefix = storage.split_s3(self.uri)
            self.client = storage.s3_client()
        else:
            self.root = Path(uri)

    def _key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def where(self, rel: str) -> str:
        return f"{self.uri}/{rel}"

    def put_file(self, path: Path, rel: str) -> None:
        if self.s3:
            storage.with_retry(
                self.where(rel), functools.partial(storage._put_file, self.client, path, self.bucket, self._key(rel))
            )
            return
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)

    def put_bytes(self, data: bytes, rel: str) -> None:
        if self.s3:
            storage.with_retry(
                self.where(rel),
                functools.partial(self.client.put_object, Bucket=self.bucket, Key=self._key(rel), Body=data),
            )
            return
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        tmp.write_bytes(data)
        os.replace(tmp, target)

    def get_bytes(self, rel: str) -> bytes | None:
        """The object's bytes, or None when it does not exist (any other failure raises StorageError)."""
        if not self.s3:
            path = self.root / rel
            return path.read_bytes() if path.is_file() else None

        def get() -> bytes | None:
            from botocore.exceptions import ClientError

            try:
                resp = self.client.get_object(Bucket=self.bucket, Key=self._key(rel))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise
            body = resp["Body"]
            try:
                return body.read()
            finally:
                body.close()

        return storage.with_retry(self.where(rel), get)

    def get_file(self, rel: str, target: Path) -> None:
        tmp = target.with_name(f".{target.name}.part")
        try:
            if self.s3:
                storage.with_retry(
                    self.where(rel),
                    functools.partial(storage._get_object, self.client, self.bucket, self._key(rel), tmp),
                )
            else:
                shutil.copyfile(self.root / rel, tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, target)

    def names(self) -> list[str]:
        """Every object below the prefix, relative to it."""
        if not self.s3:
            if not self.root.is_dir():
                return []
            return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        cut = len(self.prefix) + 1 if self.prefix else 0
        return sorted(e["key"][cut:] for e in storage.list_entries(self.uri))

    def delete(self, rels: list[str]) -> None:
        if not self.s3:
            for rel in rels:
                (self.root / rel).unlink(missing_ok=True)
            folders = sorted((p for p in self.root.rglob("*") if p.is_dir()), reverse=True)  # deepest first
            for folder in folders:
                if not any(folder.iterdir()):
                    folder.rmdir()
            return
        for rel in rels:  # one DELETE per object: few objects, and SeaweedFS/MinIO/AWS all take it
            storage.with_retry(
                self.where(rel), functools.partial(self.client.delete_object, Bucket=self.bucket, Key=self._key(rel))
            )


class CheckpointSync:
    """Mirror of one fold directory's resume files at ``uri`` (see the module docstring).

    Use: :meth:`restore` before training (into a directory without a checkpoint), then append the
    instance to the trainer's ``epoch_end_callbacks``: after each epoch it uploads the checkpoint
    when the trainer wrote a new one. :meth:`clear` once the fold is done.
    """

    def __init__(self, uri: str, fold_dir: str | Path):
        self.uri = uri.rstrip("/")
        self.fold_dir = Path(fold_dir)
        self.store = _Store(self.uri)
        self._pushed: tuple[int, int, int] | None = self._signature()

    def _signature(self) -> tuple[int, int, int] | None:
        """Identity of the current checkpoint file (the trainer replaces it atomically: new inode)."""
        try:
            st = (self.fold_dir / CHECKPOINT).stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def manifest(self) -> dict[str, Any] | None:
        raw = self.store.get_bytes(MANIFEST)
        if raw is None:
            return None
        try:
            manifest = json.loads(raw)
        except ValueError:
            raise CosmosError(
                f"{self.store.where(MANIFEST)}: not JSON; delete the prefix to start the fold afresh"
            ) from None
        if manifest.get("format") != FORMAT or CHECKPOINT not in manifest.get("files", {}):
            raise CosmosError(f"{self.store.where(MANIFEST)}: unknown manifest (format {manifest.get('format')!r})")
        return manifest

    def restore(self) -> dict[str, Any] | None:
        """Download the last complete upload into the fold dir; returns its manifest (None: nothing stored).

        Refuses to overwrite a checkpoint already in the fold directory (a local one is newer or
        equal). A file whose SHA-256 differs from the manifest is a CosmosError: resuming from a
        wrong checkpoint must not pass silently.
        """
        if (self.fold_dir / CHECKPOINT).exists():
            raise CosmosError(f"{self.fold_dir}: already holds {CHECKPOINT}; not restoring over it")
        t0 = time.perf_counter()
        manifest = self.manifest()
        if manifest is None:
            log.info("no fold checkpoint at %s: starting the fold from the beginning", self.uri)
            return None
        self.fold_dir.mkdir(parents=True, exist_ok=True)
        # the checkpoint last: its presence is what makes train_fold resume
        names = sorted(manifest["files"], key=lambda n: n == CHECKPOINT)
        for name in names:
            entry = manifest["files"][name]
            target = self.fold_dir / name
            self.store.get_file(entry["key"], target)
            digest = _sha256(target)
            if digest != entry["sha256"]:
                target.unlink(missing_ok=True)
                raise CosmosError(
                    f"{self.store.where(entry['key'])}: SHA-256 {digest[:12]}... differs from the "
                    f"manifest's {entry['sha256'][:12]}...; refusing to resume from it (delete "
                    f"{self.uri} to start the fold afresh)"
                )
        self._pushed = self._signature()
        log.info(
            "restored fold checkpoint of epoch %d from %s (%.1f MB in %.1f s)",
            manifest["epoch"],
            self.uri,
            sum(e["size"] for e in manifest["files"].values()) / 1e6,
            time.perf_counter() - t0,
        )
        return manifest

    def push(self, epoch: int) -> dict[str, Any] | None:
        """Upload the fold dir's resume files as the checkpoint after ``epoch`` finished epochs.

        Returns the new manifest (None when there is no checkpoint to upload). Order: files, then
        the manifest, then the deletion of older uploads.
        """
        signature = self._signature()
        if signature is None:
            return None
        t0 = time.perf_counter()
        folder = f"epoch_{int(epoch):04d}"
        files: dict[str, dict[str, Any]] = {}
        for name in RESUME_FILES:
            path = self.fold_dir / name
            if not path.is_file():
                continue
            rel = f"{folder}/{name}"
            entry = {"key": rel, "size": path.stat().st_size, "sha256": _sha256(path)}
            self.store.put_file(path, rel)
            files[name] = entry
        manifest = {
            "format": FORMAT,
            "epoch": int(epoch),
            "files": files,
            "host": socket.gethostname(),
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self.store.put_bytes(json.dumps(manifest, indent=2).encode(), MANIFEST)
        self._pushed = signature
        keep = {MANIFEST} | {e["key"] for e in files.values()}
        stale = [rel for rel in self.store.names() if rel not in keep]
        if stale:
            self.store.delete(stale)
        log.info(
            "fold checkpoint of epoch %d -> %s (%.1f MB in %.1f s)",
            epoch,
            self.store.where(folder),
            sum(e["size"] for e in files.values()) / 1e6,
            time.perf_counter() - t0,
        )
        return manifest

    def __call__(self, epoch: int, metrics: dict) -> None:
        """Epoch-end callback (``epoch`` 0-based): upload when the trainer wrote a new checkpoint.

        nnU-Net saves ``checkpoint_latest.pth`` inside ``on_epoch_end`` with ``current_epoch``
        = ``epoch + 1`` (finished epochs), which is where a resumed run starts. An upload error
        is raised to the trainer's callback loop, which logs it as a warning and trains on.
        """
        signature = self._signature()
        if signature is None or signature == self._pushed:
            return
        self.push(epoch + 1)

    def clear(self) -> None:
        """Delete everything under the fold's prefix (the fold is finished)."""
        rels = self.store.names()
        if rels:
            self.store.delete(rels)
            log.info("fold finished: deleted %d checkpoint object(s) under %s", len(rels), self.uri)
