"""All configuration, read once from the environment and validated at start-up.

Every process (gunicorn, RQ workers, the local runner, the benchmark) calls
``Settings.from_env()`` before doing anything else; a missing or malformed
variable stops the process with a message that names it, instead of failing on
the first request.  ``APP_ENV`` picks a profile whose defaults suit
development, testing or production; production has no defaults for anything
secret.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

PROFILES = ("development", "testing", "production")

# The credentials the local S3 server is started with.  Production refuses them.
DEV_S3_ACCESS_KEY = "resizer-dev-access"
DEV_S3_SECRET_KEY = "resizer-dev-secret-key"


# What a tenant (API key owner) may be called: it becomes a storage prefix.
TENANT_PATTERN = r"[a-z0-9_-]{1,32}"
# The tenant of every request when no API keys are configured.
DEFAULT_TENANT = "public"


class SettingsError(ValueError):
    """A configuration variable is missing or wrong; the message names it."""


@dataclass(frozen=True)
class Settings:
    app_env: str = "development"
    # Redis / RQ
    redis_url: str = "redis://127.0.0.1:6379/0"
    queue_name: str = "resize"
    # S3-compatible storage
    s3_endpoint_url: str | None = "http://127.0.0.1:9000"
    s3_public_endpoint_url: str | None = None
    s3_bucket: str = "resizer"
    s3_access_key_id: str = DEV_S3_ACCESS_KEY
    s3_secret_access_key: str = field(default=DEV_S3_SECRET_KEY, repr=False)
    s3_region: str = "us-east-1"
    presigned_url_ttl: int = 900
    # Limits on what clients send
    max_upload_bytes: int = 40 * 1024 * 1024
    max_input_pixels: int = 100_000_000
    max_output_dimension: int = 8192
    max_variants: int = 10
    max_frames: int = 300
    # Watermark uploads (PNG/WebP): bytes and pixels each
    watermark_max_bytes: int = 1024 * 1024
    watermark_max_pixels: int = 4_000_000
    # Jobs
    job_timeout: int = 60
    job_retries: int = 3
    result_ttl: int = 86_400
    result_retention_days: int = 7
    idempotency_ttl: int = 86_400
    # A status request without ?wait= for an unfinished job waits up to this long for its end (0: never).
    status_hold_ms: int = 200
    # Worker liveness: how often a busy worker proves it is alive, and how
    # long a silent one is trusted before its job is handed to another worker.
    worker_heartbeat_interval: int = 5
    worker_dead_after: int = 20
    maintenance_interval: int = 15
    # Jobs Redis lost (crash before its AOF reached disk, failover, a Redis that came
    # back empty) are queued again from their original in storage: how often a worker
    # looks, and how old an original must be before a missing job counts as lost.
    reconcile_interval: int = 30
    # Uploads up to REDIS_ORIGINAL_MAX_BYTES wait for their job in Redis instead of storage
    # (only when Redis keeps what it acknowledges), within REDIS_ORIGINALS_BUDGET bytes in all.
    redis_original_max_bytes: int = 4 * 1024 * 1024
    redis_originals_budget: int = 256 * 1024 * 1024
    reconcile_grace: int = 60
    # A worker runs jobs in its own process (no fork per job); it exits and is
    # restarted after a job that left it holding more than WORKER_MAX_RSS_MB (so a
    # leak cannot grow forever), or after WORKER_MAX_JOBS jobs (0: never, for both).
    worker_max_jobs: int = 0
    worker_max_rss_mb: int = 512
    # Logging
    log_level: str = "INFO"
    log_format: str = "text"
    # Security: API keys as "tenant:sha256hex" pairs (or a file of them),
    # rate limits in the "N/second;M/minute" notation, CORS origins.
    api_keys: str = field(default="", repr=False)
    api_keys_file: str = ""
    rate_limit_per_key: str = ""
    rate_limit_per_ip: str = ""
    cors_origins: str = ""
    trusted_proxies: int = 0
    # Completion webhooks: HMAC secret (no secret: callback_url is refused),
    # hosts/networks allowed despite being private, timeout per attempt.
    webhook_secret: str = field(default="", repr=False)
    webhook_allowlist: str = ""
    webhook_timeout: int = 5
    # Bearer token that /metrics requires (in production /metrics is off without one)
    metrics_token: str = field(default="", repr=False)

    @property
    def presign_endpoint_url(self) -> str | None:
        """The endpoint presigned URLs are signed for (what clients can reach)."""
        return self.s3_public_endpoint_url or self.s3_endpoint_url

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Build and validate settings from ``environ`` (default ``os.environ``)."""
        env = dict(os.environ if environ is None else environ)
        profile = env.get("APP_ENV", "development").strip() or "development"
        if profile not in PROFILES:
            raise SettingsError(f"APP_ENV must be one of {', '.join(PROFILES)}, not {profile!r}")
        values: dict[str, object] = {"app_env": profile}
        for f in dataclasses.fields(cls):
            if f.name == "app_env":
                continue
            raw = env.get(f.name.upper())
            if raw is None or raw == "":
                if profile == "production" and f.name in _REQUIRED_IN_PRODUCTION:
                    raise SettingsError(f"{f.name.upper()} must be set when APP_ENV=production")
                continue
            values[f.name] = _parse(f, raw)
        if profile == "production":
            values.setdefault("log_format", "json")  # for log shippers; text stays the default elsewhere
            # Safe to expose by default: every key and every address is limited.
            values.setdefault("rate_limit_per_key", "20/second;600/minute")
            values.setdefault("rate_limit_per_ip", "50/second;1200/minute")
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        for name, (low, high) in _INT_RANGES.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise SettingsError(f"{name.upper()} must be between {low} and {high}, not {value}")
        parsed = urlparse(self.redis_url)
        if parsed.scheme not in ("redis", "rediss", "unix"):
            raise SettingsError(f"REDIS_URL must start with redis://, rediss:// or unix://, not {self.redis_url!r}")
        for name in ("s3_endpoint_url", "s3_public_endpoint_url"):
            url = getattr(self, name)
            if url is not None and (urlparse(url).scheme not in ("http", "https") or not urlparse(url).netloc):
                raise SettingsError(f"{name.upper()} must be an http(s) URL, not {url!r}")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", self.s3_bucket):
            raise SettingsError(f"S3_BUCKET must be a valid bucket name (3-63 of a-z 0-9 . -), not {self.s3_bucket!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", self.queue_name):
            raise SettingsError(f"QUEUE_NAME must be 1-64 characters of A-Z a-z 0-9 _ . : -, not {self.queue_name!r}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {self.log_level!r}")
        if self.log_format not in ("text", "json"):
            raise SettingsError(f"LOG_FORMAT must be text or json, not {self.log_format!r}")
        if self.worker_dead_after <= 2 * self.worker_heartbeat_interval:
            raise SettingsError("WORKER_DEAD_AFTER must be more than twice WORKER_HEARTBEAT_INTERVAL")
        for name in ("rate_limit_per_key", "rate_limit_per_ip"):
            value = getattr(self, name)
            if value:
                from limits import parse_many  # flask-limiter's own parser: what it accepts, we accept

                try:
                    parse_many(value)
                except ValueError:
                    raise SettingsError(f"{name.upper()} must look like '20/second;600/minute', not {value!r}") from None
        keys = self.api_key_hashes()
        if self.app_env == "production" and not keys:
            raise SettingsError("API_KEYS or API_KEYS_FILE must configure at least one API key when APP_ENV=production")
        if self.app_env == "production":
            if (self.s3_access_key_id, self.s3_secret_access_key) == (DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY) or (
                self.s3_access_key_id in ("minioadmin",) or self.s3_secret_access_key in ("minioadmin",)
            ):
                raise SettingsError(
                    "S3_ACCESS_KEY_ID/S3_SECRET_ACCESS_KEY are the well-known default credentials; "
                    "production needs a real storage user"
                )


    def api_key_hashes(self) -> dict[str, str]:
        """{sha256 hex of a key: tenant} from API_KEYS and API_KEYS_FILE; a malformed entry is an error."""
        entries: list[tuple[str, str, str]] = []
        for item in filter(None, (part.strip() for part in self.api_keys.split(","))):
            tenant, _, digest = item.partition(":")
            entries.append((tenant.strip(), digest.strip().lower(), "API_KEYS"))
        if self.api_keys_file:
            path = Path(self.api_keys_file)
            if not path.is_file():
                raise SettingsError(f"API_KEYS_FILE {path} does not exist")
            for number, line in enumerate(path.read_text().splitlines(), 1):
                line = line.split("#", 1)[0].strip()
                if line:
                    tenant, _, digest = line.replace(":", " ").partition(" ")
                    entries.append((tenant.strip(), digest.strip().lower(), f"API_KEYS_FILE line {number}"))
        keys: dict[str, str] = {}
        for tenant, digest, where in entries:
            if not re.fullmatch(TENANT_PATTERN, tenant) or not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise SettingsError(f"{where}: entries must be '<tenant>:<sha256 hex of the key>' "
                                    f"(tenant of a-z 0-9 _ -), got {tenant!r}")
            keys[digest] = tenant
        return keys


_REQUIRED_IN_PRODUCTION = {"redis_url", "s3_endpoint_url", "s3_bucket", "s3_access_key_id", "s3_secret_access_key"}

_INT_RANGES = {
    "presigned_url_ttl": (1, 7 * 86_400),  # SigV4 presigned URLs cannot outlive 7 days
    "max_upload_bytes": (1024, 1 << 31),
    "max_input_pixels": (1, 1_000_000_000),
    "max_output_dimension": (1, 65_535),
    "max_variants": (1, 100),
    "max_frames": (1, 10_000),
    "watermark_max_bytes": (1024, 64 * 1024 * 1024),
    "watermark_max_pixels": (1, 100_000_000),
    "job_timeout": (1, 3600),
    "job_retries": (0, 20),
    "result_ttl": (60, 30 * 86_400),
    "result_retention_days": (1, 3650),
    "idempotency_ttl": (1, 30 * 86_400),
    "status_hold_ms": (0, 5000),
    "worker_heartbeat_interval": (1, 300),
    "worker_dead_after": (3, 3600),
    "maintenance_interval": (1, 3600),
    "reconcile_interval": (1, 3600),
    "reconcile_grace": (1, 86_400),
    "redis_original_max_bytes": (0, 64 * 1024 * 1024),
    "redis_originals_budget": (0, 1 << 40),
    "trusted_proxies": (0, 5),
    "worker_max_jobs": (0, 10_000_000),
    "worker_max_rss_mb": (0, 1 << 20),
    "webhook_timeout": (1, 30),
}


def _parse(f: dataclasses.Field, raw: str) -> object:
    name = f.name.upper()
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if kind == "int":
        try:
            return int(raw.strip().replace("_", ""))
        except ValueError:
            raise SettingsError(f"{name} must be a whole number, not {raw!r}") from None
    return raw.strip()
