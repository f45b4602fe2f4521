"""Settings from the environment: the only module that reads ``os.environ``.

Every setting has an embedded default so that a fresh checkout runs with no
configuration at all (SQLite in ``var/``, an embedded broker, the file outbox).
Production sets ``DATABASE_URL``, ``REDIS_URL``, ``SECRET_KEYS`` and a transport.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _shipped(name: str) -> Path:
    """A folder the package reads at run time: inside an installed wheel it is
    ``newsletter/<name>``; in a checkout (``pip install -e .``) it is the
    repository's top-level ``<name>``."""
    inside = PACKAGE_DIR / name
    return inside if inside.is_dir() else PACKAGE_DIR.parent / name


TEMPLATES_DIR = _shipped("templates")
SAMPLE_PUBLICATION = _shipped("examples") / "together-were-better"
# State lives in var/ of the folder a process starts in (a deployment's app
# folder, a checkout's top level), unless NEWSLETTER_DATA_DIR says otherwise.
DEFAULT_DATA_DIR = Path("var")


class ConfigError(ValueError):
    """A setting in the environment has a value we cannot use."""


def make_folder(path: Path, setting: str) -> Path:
    """Create a folder this process writes to, or say which setting to change."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the folder {path} ({exc.strerror or exc}): "
            f"set {setting} to a folder this process may write to"
        ) from None
    return path


def _int(env: dict, name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a whole number") from None


def _float(env: dict, name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a number") from None


def _bool(env: dict, name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r}: expected true or false")


@dataclass(frozen=True)
class Settings:
    # Where state lives when nothing else is configured.
    data_dir: Path = DEFAULT_DATA_DIR
    templates_dir: Path = TEMPLATES_DIR
    # The system of record. Default: a SQLite file in data_dir.
    database_url: str = ""
    # Broker and shared rate limiter. Empty: embedded broker, local limiter.
    redis_url: str = ""
    # Signing keys for links (newest first; older ones still verify).
    secret_keys: tuple[str, ...] = ()
    # Where the web app is served; links in emails point here.
    base_url: str = "http://127.0.0.1:8000"

    # Transport: "outbox" (a folder of .eml files) or "smtp".
    transport: str = "outbox"
    outbox_dir: Path = DEFAULT_DATA_DIR / "outbox"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_security: str = "starttls"  # starttls | tls | none
    smtp_verify_certificates: bool = True
    smtp_timeout: float = 30.0
    smtp_connections: int = 4  # connections in flight per worker process
    smtp_messages_per_connection: int = 500
    smtp_pipelining: bool = True  # use PIPELINING (RFC 2920) when the server offers it
    smtp_chunking: bool = True  # stream messages with BDAT (RFC 3030) when it offers CHUNKING too
    smtp_window: int = 16  # messages in flight per connection when streaming
    # Email provider APIs (docs/providers.md). API URLs are settings so tests can
    # point them at local servers; keys are secrets.
    http_connect_timeout: float = 10.0
    http_read_timeout: float = 60.0
    ses_region: str = ""
    ses_access_key_id: str = ""  # empty: boto3's own chain (instance role, profile)
    ses_secret_access_key: str = ""
    ses_endpoint_url: str = ""
    ses_configuration_set: str = ""
    ses_connections: int = 8  # SendEmail calls in flight per worker process
    sendgrid_api_key: str = ""
    sendgrid_api_url: str = "https://api.sendgrid.com"
    sendgrid_batch_size: int = 1000
    postmark_server_token: str = ""
    postmark_api_url: str = "https://api.postmarkapp.com"
    postmark_message_stream: str = "broadcast"
    postmark_batch_size: int = 500
    mailgun_api_key: str = ""
    mailgun_domain: str = ""
    mailgun_api_url: str = "https://api.mailgun.net"
    mailgun_batch_size: int = 1000

    # Sending.
    batch_size: int = 500  # recipients per batch task: each costs a Celery task, a claim and a few statements
    # Rate limits of the provider account (docs/operations.md, "Rate limits").
    rate_limit_account: str = ""  # empty: the transport's name
    rate_limit_per_second: float = 0.0  # 0: unlimited
    rate_limit_per_hour: int = 0
    rate_limit_per_day: int = 0
    rate_limit_max_wait_seconds: float = 60.0  # a longer wait gives the messages back until then
    rate_limit_throttle_seconds: float = 30.0  # the pause after a throttle that does not say how long
    retry_attempts: int = 8
    retry_window_seconds: int = 6 * 3600
    retry_base_delay_seconds: float = 30.0
    error_budget_ratio: float = 0.2  # pause a send when this share of attempts fail
    error_budget_minimum: int = 50  # ...after at least this many attempts
    claim_timeout_seconds: int = 600  # a batch run that made no progress this long loses its claim
    claim_lease_seconds: int = 30  # a claim not renewed this long is taken over (the holder renews it)
    beat_interval_seconds: float = 5.0
    # A batch enqueued this long ago that no run has begun, while the send queue
    # is empty, was lost by the broker: the beat hands it out again.
    batch_lost_seconds: int = 60

    # Operations: worker heartbeats, problem thresholds, metrics, logs.
    worker_heartbeat_seconds: float = 5.0  # a worker 3 beats late is gone
    stall_warning_seconds: int = 300  # a sending send with no progress this long
    # A sending send whose server keeps asking its account to slow down, with nothing sent this long
    throttled_send_warning_seconds: int = 60
    bounce_rate_warning: float = 0.02
    complaint_rate_warning: float = 0.001  # 0.3% is where mailbox providers act
    metrics_token: str = ""  # bearer token for /metrics; empty: open
    log_format: str = "text"  # text | json
    log_level: str = "INFO"

    # Public web app: sign-up, confirm, unsubscribe, preferences, web copy.
    confirm_max_age_seconds: int = 7 * 24 * 3600  # how long a confirm link works
    signup_email_window_seconds: int = 900  # at most one confirm email per address per window
    signup_requests_per_client: int = 10  # sign-up posts per client address...
    signup_client_window_seconds: int = 600  # ...per this many seconds
    web_copy_dir: Path = DEFAULT_DATA_DIR / "web"  # a build's web/ folder: images of issues
    web_proxy_count: int = 0  # proxies in front of the app whose X-Forwarded-* to trust

    # Ops dashboard (/ops): how long an operator stays logged in, and the login limit.
    ops_session_seconds: int = 12 * 3600
    ops_login_attempts: int = 10  # failed logins per client address and per account...
    ops_login_window_seconds: int = 900  # ...per this many seconds

    # Tests and CI: a missing PostgreSQL or Redis is a failure, not a skip.
    require_services: bool = False

    # Events: provider webhooks, bounces, complaints, suppression.
    sns_topic_arns: tuple[str, ...] = ()  # SES notifications are accepted only from these topics
    sendgrid_webhook_public_key: str = ""  # the signed event webhook's verification key (base64 DER or PEM)
    mailgun_webhook_signing_key: str = ""
    postmark_webhook_username: str = ""
    postmark_webhook_password: str = ""
    # A signed webhook older than this is refused. Mailgun retries a failed
    # webhook for 8 hours, and SendGrid for 24, with the original timestamp.
    webhook_max_age_seconds: int = 25 * 3600
    soft_bounce_threshold: int = 3  # soft bounces of different messages ...
    soft_bounce_window_days: int = 30  # ... within this many days suppress an address
    raw_event_retention_days: int = 30  # provider payloads are kept this long, for debugging
    unconfirmed_retention_days: int = 30  # sign-ups never confirmed are forgotten after this long
    bounce_domain: str = ""  # set: envelope sender bounces+<signed delivery id>@bounce_domain (VERP)
    dkim_private_key_path: str = ""  # set: sign every message (PEM RSA key)
    dkim_selector: str = ""
    dkim_domain: str = ""  # empty: the domain of the publication's From address

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # Platform URLs say postgres://; SQLAlchemy wants a driver name.
            if url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url[len("postgres://"):]
            elif url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://"):]
            return url
        return f"sqlite:///{self.data_dir / 'newsletter.db'}"

    @property
    def install_tag(self) -> str:
        """A short, stable, non-secret tag of this install (from its signing key)."""
        return _install_tag(self.signing_keys[-1])  # asked for by every message's Message-ID

    @property
    def embedded(self) -> bool:
        """True when no Redis is configured: embedded broker, local limiter."""
        return not self.redis_url

    @property
    def signing_keys(self) -> tuple[str, ...]:
        if self.secret_keys:
            return self.secret_keys
        # The embedded default keeps a generated key in data_dir, so links stay
        # valid across restarts of the demo. Production must set SECRET_KEYS.
        return (_local_secret(self.data_dir),)


@lru_cache(maxsize=8)
def _local_secret(data_dir: Path) -> str:
    path = data_dir / "secret-key"
    if path.exists():
        return path.read_text().strip()
    import secrets

    make_folder(data_dir, "NEWSLETTER_DATA_DIR (or SECRET_KEYS)")
    key = secrets.token_urlsafe(32)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


def settings_from(env: dict) -> Settings:
    """Build Settings from a mapping shaped like ``os.environ``."""
    data_dir = Path(env.get("NEWSLETTER_DATA_DIR") or Settings.data_dir).absolute()
    keys = tuple(k.strip() for k in env.get("SECRET_KEYS", "").split(",") if k.strip())
    s = Settings(
        data_dir=data_dir,
        templates_dir=Path(env.get("NEWSLETTER_TEMPLATES_DIR") or Settings.templates_dir),
        database_url=env.get("DATABASE_URL", ""),
        redis_url=env.get("REDIS_URL", ""),
        secret_keys=keys,
        base_url=(env.get("BASE_URL") or Settings.base_url).rstrip("/"),
        transport=env.get("TRANSPORT", Settings.transport),
        outbox_dir=Path(env.get("OUTBOX_DIR") or data_dir / "outbox"),
        smtp_host=env.get("SMTP_HOST", Settings.smtp_host),
        smtp_port=_int(env, "SMTP_PORT", Settings.smtp_port),
        smtp_username=env.get("SMTP_USERNAME", ""),
        smtp_password=env.get("SMTP_PASSWORD", ""),
        smtp_security=env.get("SMTP_SECURITY", Settings.smtp_security),
        smtp_verify_certificates=_bool(env, "SMTP_VERIFY_CERTIFICATES", True),
        smtp_timeout=_float(env, "SMTP_TIMEOUT", Settings.smtp_timeout),
        smtp_connections=_int(env, "SMTP_CONNECTIONS", Settings.smtp_connections),
        smtp_messages_per_connection=_int(
            env, "SMTP_MESSAGES_PER_CONNECTION", Settings.smtp_messages_per_connection
        ),
        smtp_pipelining=_bool(env, "SMTP_PIPELINING", Settings.smtp_pipelining),
        smtp_chunking=_bool(env, "SMTP_CHUNKING", Settings.smtp_chunking),
        smtp_window=_int(env, "SMTP_WINDOW", Settings.smtp_window),
        **_provider_settings(env),
        batch_size=_int(env, "BATCH_SIZE", Settings.batch_size),
        rate_limit_account=env.get("RATE_LIMIT_ACCOUNT", "").strip(),
        rate_limit_per_second=_float(env, "RATE_LIMIT_PER_SECOND", 0.0),
        rate_limit_per_hour=_int(env, "RATE_LIMIT_PER_HOUR", 0),
        rate_limit_per_day=_int(env, "RATE_LIMIT_PER_DAY", 0),
        rate_limit_max_wait_seconds=_float(env, "RATE_LIMIT_MAX_WAIT_SECONDS", Settings.rate_limit_max_wait_seconds),
        rate_limit_throttle_seconds=_float(env, "RATE_LIMIT_THROTTLE_SECONDS", Settings.rate_limit_throttle_seconds),
        retry_attempts=_int(env, "RETRY_ATTEMPTS", Settings.retry_attempts),
        retry_window_seconds=_int(env, "RETRY_WINDOW_SECONDS", Settings.retry_window_seconds),
        retry_base_delay_seconds=_float(
            env, "RETRY_BASE_DELAY_SECONDS", Settings.retry_base_delay_seconds
        ),
        error_budget_ratio=_float(env, "ERROR_BUDGET_RATIO", Settings.error_budget_ratio),
        error_budget_minimum=_int(env, "ERROR_BUDGET_MINIMUM", Settings.error_budget_minimum),
        claim_timeout_seconds=_int(env, "CLAIM_TIMEOUT_SECONDS", Settings.claim_timeout_seconds),
        claim_lease_seconds=_int(env, "CLAIM_LEASE_SECONDS", Settings.claim_lease_seconds),
        beat_interval_seconds=_float(env, "BEAT_INTERVAL_SECONDS", Settings.beat_interval_seconds),
        batch_lost_seconds=_int(env, "BATCH_LOST_SECONDS", Settings.batch_lost_seconds),
        worker_heartbeat_seconds=_float(env, "WORKER_HEARTBEAT_SECONDS", Settings.worker_heartbeat_seconds),
        stall_warning_seconds=_int(env, "STALL_WARNING_SECONDS", Settings.stall_warning_seconds),
        throttled_send_warning_seconds=_int(env, "THROTTLED_SEND_WARNING_SECONDS",
                                            Settings.throttled_send_warning_seconds),
        bounce_rate_warning=_float(env, "BOUNCE_RATE_WARNING", Settings.bounce_rate_warning),
        complaint_rate_warning=_float(env, "COMPLAINT_RATE_WARNING", Settings.complaint_rate_warning),
        metrics_token=env.get("METRICS_TOKEN", ""),
        log_format=(env.get("LOG_FORMAT") or Settings.log_format).lower(),
        log_level=(env.get("LOG_LEVEL") or Settings.log_level).upper(),
        confirm_max_age_seconds=_int(env, "CONFIRM_MAX_AGE_SECONDS", Settings.confirm_max_age_seconds),
        signup_email_window_seconds=_int(env, "SIGNUP_EMAIL_WINDOW_SECONDS", Settings.signup_email_window_seconds),
        signup_requests_per_client=_int(env, "SIGNUP_REQUESTS_PER_CLIENT", Settings.signup_requests_per_client),
        signup_client_window_seconds=_int(
            env, "SIGNUP_CLIENT_WINDOW_SECONDS", Settings.signup_client_window_seconds
        ),
        web_copy_dir=Path(env.get("WEB_COPY_DIR") or data_dir / "web"),
        web_proxy_count=_int(env, "WEB_PROXY_COUNT", 0),
        ops_session_seconds=_int(env, "OPS_SESSION_SECONDS", Settings.ops_session_seconds),
        ops_login_attempts=_int(env, "OPS_LOGIN_ATTEMPTS", Settings.ops_login_attempts),
        ops_login_window_seconds=_int(env, "OPS_LOGIN_WINDOW_SECONDS", Settings.ops_login_window_seconds),
        require_services=_bool(env, "NEWSLETTER_REQUIRE_SERVICES", False),
        sns_topic_arns=tuple(a.strip() for a in env.get("SNS_TOPIC_ARN", "").split(",") if a.strip()),
        sendgrid_webhook_public_key=env.get("SENDGRID_WEBHOOK_PUBLIC_KEY", ""),
        mailgun_webhook_signing_key=env.get("MAILGUN_WEBHOOK_SIGNING_KEY", ""),
        postmark_webhook_username=env.get("POSTMARK_WEBHOOK_USERNAME", ""),
        postmark_webhook_password=env.get("POSTMARK_WEBHOOK_PASSWORD", ""),
        webhook_max_age_seconds=_int(env, "WEBHOOK_MAX_AGE_SECONDS", Settings.webhook_max_age_seconds),
        soft_bounce_threshold=_int(env, "SOFT_BOUNCE_THRESHOLD", Settings.soft_bounce_threshold),
        soft_bounce_window_days=_int(env, "SOFT_BOUNCE_WINDOW_DAYS", Settings.soft_bounce_window_days),
        raw_event_retention_days=_int(env, "RAW_EVENT_RETENTION_DAYS", Settings.raw_event_retention_days),
        unconfirmed_retention_days=_int(env, "UNCONFIRMED_RETENTION_DAYS", Settings.unconfirmed_retention_days),
        bounce_domain=env.get("BOUNCE_DOMAIN", "").strip().lower(),
        dkim_private_key_path=env.get("DKIM_PRIVATE_KEY_PATH", ""),
        dkim_selector=env.get("DKIM_SELECTOR", ""),
        dkim_domain=env.get("DKIM_DOMAIN", "").strip().lower(),
    )
    if s.transport not in TRANSPORTS:
        raise ConfigError(f"TRANSPORT={s.transport!r}: expected one of {', '.join(TRANSPORTS)}")
    if s.smtp_security not in ("starttls", "tls", "none"):
        raise ConfigError(f"SMTP_SECURITY={s.smtp_security!r}: expected starttls, tls or none")
    if s.log_format not in ("text", "json"):
        raise ConfigError(f"LOG_FORMAT={s.log_format!r}: expected text or json")
    if s.dkim_private_key_path and not s.dkim_selector:
        raise ConfigError("DKIM_PRIVATE_KEY_PATH is set but DKIM_SELECTOR is not: set the selector your DNS publishes the key under")
    if s.batch_size < 1:
        raise ConfigError(f"BATCH_SIZE={s.batch_size}: must be at least 1")
    if s.claim_lease_seconds < 1:
        raise ConfigError(f"CLAIM_LEASE_SECONDS={s.claim_lease_seconds}: must be at least 1")
    for name in ("per_second", "per_hour", "per_day", "max_wait_seconds", "throttle_seconds"):
        value = getattr(s, f"rate_limit_{name}")
        if value < 0:
            raise ConfigError(f"RATE_LIMIT_{name.upper()}={value}: must be 0 or more")
    return s


TRANSPORTS = ("outbox", "smtp", "ses", "sendgrid", "postmark", "mailgun")


def _provider_settings(env: dict) -> dict:
    d = Settings
    return dict(
        http_connect_timeout=_float(env, "HTTP_CONNECT_TIMEOUT", d.http_connect_timeout),
        http_read_timeout=_float(env, "HTTP_READ_TIMEOUT", d.http_read_timeout),
        ses_region=env.get("SES_REGION", ""),
        ses_access_key_id=env.get("SES_ACCESS_KEY_ID", ""),
        ses_secret_access_key=env.get("SES_SECRET_ACCESS_KEY", ""),
        ses_endpoint_url=env.get("SES_ENDPOINT_URL", ""),
        ses_configuration_set=env.get("SES_CONFIGURATION_SET", ""),
        ses_connections=_int(env, "SES_CONNECTIONS", d.ses_connections),
        sendgrid_api_key=env.get("SENDGRID_API_KEY", ""),
        sendgrid_api_url=(env.get("SENDGRID_API_URL") or d.sendgrid_api_url).rstrip("/"),
        sendgrid_batch_size=_int(env, "SENDGRID_BATCH_SIZE", d.sendgrid_batch_size),
        postmark_server_token=env.get("POSTMARK_SERVER_TOKEN", ""),
        postmark_api_url=(env.get("POSTMARK_API_URL") or d.postmark_api_url).rstrip("/"),
        postmark_message_stream=env.get("POSTMARK_MESSAGE_STREAM") or d.postmark_message_stream,
        postmark_batch_size=_int(env, "POSTMARK_BATCH_SIZE", d.postmark_batch_size),
        mailgun_api_key=env.get("MAILGUN_API_KEY", ""),
        mailgun_domain=env.get("MAILGUN_DOMAIN", ""),
        mailgun_api_url=(env.get("MAILGUN_API_URL") or d.mailgun_api_url).rstrip("/"),
        mailgun_batch_size=_int(env, "MAILGUN_BATCH_SIZE", d.mailgun_batch_size),
    )


def read_secret(*, env_name: str = "", file: str = "", where: str, environ: dict | None = None) -> str:
    """A secret a publication names but never holds: the value of the environment
    variable ``env_name``, or the contents of ``file`` (a mounted secret).

    ``where`` says who asked ("publication 'x', sending.smtp.password_env"), so
    the error names the publication and the field. The value is never logged
    or shown; ``secret_is_set`` tells the pages whether it is there.
    """
    if env_name and file:
        raise ConfigError(f"{where}: name an environment variable or a secrets file, not both")
    if env_name:
        value = (os.environ if environ is None else environ).get(env_name, "")
        if not value:
            raise ConfigError(f"{where}: the environment variable {env_name} is not set: "
                              f"set it in the environment of every worker and web process")
        return value
    if file:
        try:
            value = Path(file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{where}: the secrets file {file} cannot be read ({exc.strerror or exc}): "
                              "check the path and that this process may read it") from None
        if not value:
            raise ConfigError(f"{where}: the secrets file {file} is empty")
        return value
    raise ConfigError(f"{where}: no secret named: set an environment variable name or a secrets file")


def secret_is_set(*, env_name: str = "", file: str = "", environ: dict | None = None) -> bool:
    """Whether the secret a publication names is there, without reading it out."""
    if env_name:
        return bool((os.environ if environ is None else environ).get(env_name))
    if file:
        path = Path(file)
        return path.is_file() and os.access(path, os.R_OK) and path.stat().st_size > 0
    return False


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return settings_from(dict(os.environ))


def environment_with(overrides: dict[str, str]) -> dict[str, str]:
    """This process's environment with some settings replaced: for the
    processes a command starts (the demo's beat and worker)."""
    env = dict(os.environ)
    env.update(overrides)
    return env


@lru_cache(maxsize=8)
def _install_tag(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:8]
