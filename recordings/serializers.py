"""What the recordings API takes and answers: a call's recording with its download link,
and an organization's own bucket (write-only credentials)."""

from __future__ import annotations

from botocore.endpoint_provider import RuleSetStandardLibrary
from botocore.exceptions import InvalidRegionError
from botocore.utils import is_valid_endpoint_url, is_valid_ipv6_endpoint_url, validate_region_name
from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from calls.models import Call
from calls.serializers import RECORDING_STATUS_HELP
from providerkeys.serializers import SecretKeyField
from recordings.models import Recording, RecordingStatus, RecordingStorage
from recordings.selectors import recording_link
from voicecalls.fields import JSONTypedSerializer

BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$"
REGION_PATTERN = r"^[a-z0-9][a-z0-9\-]{0,31}$"
DEFAULT_REGION = "us-east-1"
# S3's bucket naming rules beyond BUCKET_PATTERN's characters: botocore's own test of a
# DNS-compatible bucket (the S3 endpoint rules' `aws.isVirtualHostableS3Bucket`: host
# labels, so no adjacent periods and no label starting or ending with a hyphen, and not
# an IP address), and the prefixes and suffixes S3 reserves, which no client checks
# (S3 User Guide, "General purpose bucket naming rules"). botocore's
# `handlers.validate_bucket_name` (VALID_BUCKET) is looser than S3: it takes capitals,
# underscores and 255 characters.
_S3_RULES = RuleSetStandardLibrary(partitions_data={})
BUCKET_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
BUCKET_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def s3_bucket_name_allowed(name: str) -> bool:
    return (
        _S3_RULES.aws_is_virtual_hostable_s3_bucket(name, allow_subdomains=True)
        and not name.startswith(BUCKET_RESERVED_PREFIXES)
        and not name.endswith(BUCKET_RESERVED_SUFFIXES)
    )


class RecordingAccessSerializer(serializers.Serializer):
    """A call's recording and, once it is complete, where to download it."""

    status = serializers.ChoiceField(
        choices=RecordingStatus.choices, help_text=RECORDING_STATUS_HELP
    )
    url = serializers.URLField(
        allow_null=True,
        help_text="Downloads the OGG/Opus file until `expires_at`; null unless `complete`.",
    )
    expires_at = serializers.DateTimeField(allow_null=True)
    duration_seconds = serializers.IntegerField(allow_null=True)
    size_bytes = serializers.IntegerField(allow_null=True)
    error = serializers.CharField(
        allow_null=True,
        help_text="Why a `failed` recording failed, or why a `complete` one ended before its "
        "call did (its maximum duration: `Session limit reached`); LiveKit's reason.",
    )


def recording_access(recording: Recording, *, call: Call, retention_days: int | None) -> dict:
    """`RecordingAccess`, with a freshly presigned link."""
    link = recording_link(recording=recording, call=call, retention_days=retention_days)
    return RecordingAccessSerializer(
        {
            "status": recording.status,
            "url": link.url,
            "expires_at": link.expires_at,
            "duration_seconds": recording.duration_seconds,
            "size_bytes": recording.size_bytes,
            "error": recording.error or None,
        }
    ).data


@extend_schema_field({"type": "string", "format": "uri", "maxLength": 255})
class EndpointField(serializers.CharField):
    """An https URL of an S3-compatible service, guarded like a webhook URL."""

    def to_internal_value(self, data: object) -> str:
        value = super().to_internal_value(data)
        if not value:
            return ""
        from webhooks.transport import url_problem

        problem = url_problem(value, allow_private=settings.WEBHOOKS_ALLOW_PRIVATE_URLS)
        if problem:
            raise serializers.ValidationError(problem.replace("URL", "endpoint"), code="invalid")
        # What botocore refuses to build a client for (an underscore or a non-ASCII
        # letter in the host, a query or a fragment) would break every download link and
        # file deletion later.
        if "?" in value or "#" in value:
            raise serializers.ValidationError(
                "An S3 endpoint has no query or fragment.", code="invalid"
            )
        if not (is_valid_endpoint_url(value) or is_valid_ipv6_endpoint_url(value)):
            raise serializers.ValidationError(
                "An S3 client cannot use this endpoint: its host may have only ASCII "
                "letters, digits, dots and hyphens.",
                code="invalid",
            )
        return value.rstrip("/")


class RecordingStorageSerializer(serializers.Serializer):
    """An organization's own bucket, as the API shows it: never the secret."""

    endpoint = serializers.CharField(help_text="Empty: AWS S3.")
    bucket = serializers.CharField()
    region = serializers.CharField()
    masked_access_key_id = serializers.CharField(
        source="access_key_id_masked", help_text="The access key id's last 4 characters."
    )
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class RecordingStorageWriteSerializer(JSONTypedSerializer):
    endpoint = EndpointField(
        max_length=255,
        allow_blank=True,
        default="",
        help_text="The S3 API's base URL of an S3-compatible service (https; MinIO, R2, "
        "...), addressed path-style; empty or left out: AWS S3.",
    )
    bucket = serializers.RegexField(
        BUCKET_PATTERN, max_length=63, help_text="An existing bucket (S3 naming rules)."
    )
    region = serializers.RegexField(
        REGION_PATTERN,
        max_length=32,
        default=DEFAULT_REGION,
        help_text="Not digits only, nor ending with a hyphen (what an S3 client refuses).",
    )
    access_key_id = SecretKeyField(min_length=1, max_length=128)
    secret_access_key = SecretKeyField(
        min_length=1,
        max_length=256,
        help_text="Stored encrypted; never shown again. LiveKit's egress writes recordings "
        "with this key and voicecalls signs download links and deletes files with it: "
        "allow s3:PutObject, s3:GetObject and s3:DeleteObject under `recordings/`.",
    )

    def validate_bucket(self, value: str) -> str:
        # S3 has no bucket by such a name: every upload, link and deletion would fail.
        if not s3_bucket_name_allowed(value):
            raise serializers.ValidationError(
                "S3 does not allow this bucket name (see its bucket naming rules).",
                code="invalid",
            )
        return value

    def validate_region(self, value: str) -> str:
        # What botocore refuses (digits only, a trailing hyphen) would break every
        # download link and file deletion later, as an unusable endpoint would.
        try:
            validate_region_name(value)
        except InvalidRegionError:
            raise serializers.ValidationError(
                "An S3 client cannot use this region: not digits only, nor ending with a hyphen.",
                code="invalid",
            ) from None
        return value


def recording_storage_data(storage: RecordingStorage) -> dict:
    return RecordingStorageSerializer(storage).data
