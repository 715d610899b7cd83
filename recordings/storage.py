"""The one module that talks to S3-compatible storage (boto3): where a recording goes,
presigned download links, deleting a file.

Credentials come from the deployment's settings (the platform's bucket) or from the
organization's `RecordingStorage`, decrypted only here, and go to exactly two places:
boto3 (signing) and the egress start request to LiveKit. `S3Target` keeps them out of
its `repr`, so a log line or traceback showing one shows no secret.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from providerkeys.crypto import UndecryptableValue
from recordings.models import Recording, RecordingStorage, StorageKind
from voicecalls.addresses import address_is_public


class StorageError(Exception):
    """The storage could not be reached or refused the request (no credentials in it)."""


class StorageAccessRefused(StorageError):
    """The bucket refused the credentials: they do not reach it."""


# What S3 (and the S3-compatible stores) answer credentials that do not reach a bucket.
ACCESS_REFUSED_CODES = frozenset(
    {"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
)


@dataclass(frozen=True)
class S3Target:
    """A bucket and the credentials to write and read it."""

    endpoint: str
    bucket: str
    region: str
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    # An organization's own endpoint, chosen by its client key: guarded like a webhook URL.
    customer: bool = False


def platform_target() -> S3Target | None:
    """The platform's bucket (RECORDINGS_S3_*), or None when none is configured."""
    if not settings.RECORDINGS_S3_BUCKET:
        return None
    return S3Target(
        endpoint=settings.RECORDINGS_S3_ENDPOINT,
        bucket=settings.RECORDINGS_S3_BUCKET,
        region=settings.RECORDINGS_S3_REGION,
        access_key_id=settings.RECORDINGS_S3_ACCESS_KEY_ID,
        secret_access_key=settings.RECORDINGS_S3_SECRET_ACCESS_KEY,
    )


def _organization_target(storage: RecordingStorage) -> S3Target:
    return S3Target(
        endpoint=storage.endpoint,
        bucket=storage.bucket,
        region=storage.region,
        access_key_id=storage.access_key_id,
        secret_access_key=storage.secret_access_key,
        customer=True,
    )


def _storage_row(organization_id: object) -> RecordingStorage | None:
    try:
        return RecordingStorage.objects.filter(organization_id=organization_id).first()
    except UndecryptableValue:
        raise StorageError(
            "The organization's storage credentials cannot be decrypted with the configured "
            "CRYPTOGRAPHY_KEY (or its fallbacks)."
        ) from None


def target_for_new_recording(*, organization_id: object) -> tuple[str, S3Target] | None:
    """Where a new recording of this organization goes: its own bucket when it set one,
    else the platform's; None when neither exists. StorageError when its own bucket's
    credentials cannot be read."""
    storage = _storage_row(organization_id)
    if storage is not None:
        return StorageKind.ORGANIZATION, _organization_target(storage)
    platform = platform_target()
    if platform is not None:
        return StorageKind.PLATFORM, platform
    return None


def target_of(recording: Recording, *, organization_id: object) -> S3Target | None:
    """The bucket a recording was written to, with the credentials that reach it now;
    None when they are gone (the organization removed its storage, the platform's
    bucket was unconfigured). StorageError when the credentials cannot be read."""
    if recording.storage == StorageKind.ORGANIZATION:
        storage = _storage_row(organization_id)
        credentials = _organization_target(storage) if storage is not None else None
    else:
        credentials = platform_target()
    if credentials is None:
        return None
    return S3Target(
        endpoint=recording.endpoint,
        bucket=recording.bucket,
        region=recording.region,
        access_key_id=credentials.access_key_id,
        secret_access_key=credentials.secret_access_key,
        customer=credentials.customer,
    )


def bucket_is_current(recording: Recording, *, organization_id: object) -> bool:
    """Whether a recording in an organization's own bucket is in the bucket its storage
    setting names now (not one it replaced)."""
    storage = _storage_row(organization_id)
    return storage is not None and (storage.endpoint, storage.bucket) == (
        recording.endpoint,
        recording.bucket,
    )


def _client(target: S3Target):  # botocore's client classes are generated: no hint
    try:
        return _client_built(target)
    except ValueError as exc:  # botocore refuses the endpoint or region
        raise StorageError(f"The storage's endpoint or region is not usable: {exc}") from None


@functools.lru_cache(maxsize=32)
def _client_built(target: S3Target):
    # Building a client loads the S3 service model (tens of ms); clients are thread-safe.
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path" if target.endpoint else "auto"},
        connect_timeout=settings.RECORDINGS_S3_TIMEOUT_SECONDS,
        read_timeout=settings.RECORDINGS_S3_TIMEOUT_SECONDS,
        retries={"max_attempts": 2, "mode": "standard"},
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=target.endpoint or None,
        region_name=target.region or None,
        aws_access_key_id=target.access_key_id or None,
        aws_secret_access_key=target.secret_access_key or None,
        config=config,
    )


def presigned_get_url(target: S3Target, *, key: str, expires_in: int) -> str:
    """A link that downloads the object for `expires_in` seconds, signed locally (no
    request). It names the access key id, as every SigV4 link does, never the secret.
    StorageError when it cannot be signed (no credentials found: an instance role the
    metadata service does not give)."""
    try:
        return _client(target).generate_presigned_url(
            "get_object",
            Params={"Bucket": target.bucket, "Key": key, "ResponseContentType": "audio/ogg"},
            ExpiresIn=expires_in,
        )
    except (BotoCoreError, ClientError) as exc:
        raise StorageError(f"The link could not be signed: {_describe(exc)}") from None


def target_reachable_check(target: S3Target) -> None:
    """StorageError when an organization's endpoint resolves to a non-public address:
    neither this server nor LiveKit's egress (inside the platform's network) may be
    sent there."""
    if target.customer:
        _refuse_private_endpoint(target.endpoint)


def object_delete(target: S3Target, *, key: str) -> None:
    """Delete the object (deleting one that is not there succeeds, as S3 answers; so
    does one in a bucket that no longer exists: its files went with it, and retrying
    would hold up every later deletion of the organization for ever)."""
    target_reachable_check(target)
    _deletion(lambda: _client(target).delete_object(Bucket=target.bucket, Key=key))


# S3's DeleteObjects takes at most this many keys a request.
DELETE_KEYS_MAX = 1000


def objects_delete(target: S3Target, *, keys: Sequence[str]) -> dict[str, StorageError]:
    """Delete at most DELETE_KEYS_MAX objects in one request, each as `object_delete`
    does; those the storage refused, by key (S3 answers each key apart, the others
    deleted; a store without DeleteObjects is sent one DELETE per key). StorageError when
    the request fails as a whole (none taken as deleted)."""
    target_reachable_check(target)
    answer = _deletion(lambda: _multi_delete(target, keys))
    if answer is None:
        return _each_delete(target, keys)
    refused: dict[str, StorageError] = {}
    for failure in answer.get("Errors", []):
        code = str(failure.get("Code", "error"))
        refused[failure["Key"]] = _refusal_class(code)(f"The storage refused to delete it: {code}")
    return refused


# Stores without S3's DeleteObjects (Google Cloud Storage's XML API answers it 501), or
# wanting the Content-MD5 botocore no longer sends with it: one DELETE per object there.
_NO_MULTI_DELETE_CODES = frozenset({"NotImplemented", "MissingContentMD5"})


def _multi_delete(target: S3Target, keys: Sequence[str]) -> dict | None:
    """DeleteObjects' answer; None from a store that does not take it."""
    objects = [{"Key": key} for key in keys]
    try:
        return _client(target).delete_objects(
            Bucket=target.bucket, Delete={"Objects": objects, "Quiet": True}
        )
    except ClientError as exc:
        if _describe(exc) in _NO_MULTI_DELETE_CODES:
            return None
        raise


def _each_delete(target: S3Target, keys: Sequence[str]) -> dict[str, StorageError]:
    refused: dict[str, StorageError] = {}
    for key in keys:
        try:
            _deletion(lambda key=key: _client(target).delete_object(Bucket=target.bucket, Key=key))
        except StorageError as exc:
            refused[key] = exc
    return refused


def _deletion(request: Callable[[], dict | None]) -> dict | None:
    """The answer to a delete request; {} when the bucket no longer exists (as
    `object_delete` says). StorageAccessRefused or StorageError when it fails."""
    try:
        return request()
    except ClientError as exc:
        code = _describe(exc)
        if code == "NoSuchBucket":
            return {}
        raise _refusal_class(code)(f"The storage refused or could not be reached: {code}") from None
    except BotoCoreError as exc:
        problem = _describe(exc)
        raise StorageError(f"The storage refused or could not be reached: {problem}") from None


def _refusal_class(code: str) -> type[StorageError]:
    return StorageAccessRefused if code in ACCESS_REFUSED_CODES else StorageError


def _describe(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "error"))
    return exc.__class__.__name__


def _refuse_private_endpoint(endpoint: str) -> None:
    """An organization's endpoint is a URL its client key chose: the server requests it
    only while it resolves to public addresses (as customer webhooks), unless private
    targets are allowed (WEBHOOKS_ALLOW_PRIVATE_URLS, local development and tests)."""
    if not endpoint or settings.WEBHOOKS_ALLOW_PRIVATE_URLS:  # AWS itself, or allowed
        return
    parts = urlsplit(endpoint)
    try:
        infos = socket.getaddrinfo(parts.hostname or "", parts.port or 443)
    except (OSError, UnicodeError) as exc:
        raise StorageError(f"The storage's host does not resolve: {exc}") from None
    if any(not address_is_public(info[4][0]) for info in infos):
        raise StorageError("The storage's host resolves to a non-public address.")
