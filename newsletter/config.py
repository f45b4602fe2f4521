"""Settings from the environment: the only module that reads ``os.environ``.

Every setting has an embedded default so that a fresh checkout runs with no
configuration at all (SQLite in ``var/``, an embedded broker, the file outbox).
Production sets ``DATABASE_URL``, ``REDIS_URL``, ``SECRET_KEYS`` and a transport.

Each field of ``Settings`` is declared once, in its section, with the
environment variable it is read from (``setting``); ``settings_from`` reads
them all the same way. A transport's settings form a group of their own
(``provider=``), which also says what a publication's ``sending:`` block may
set; the transport's module (``newsletter.transports.<name>``) says the
rest: its class, its account key and its webhook. README.md's configuration
tables list every variable read here, with its default (tests/test_config.py).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

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


# --- how a value is read ------------------------------------------------------------------
# A reader takes the environment, the variable's name, the field's default and
# the fields read so far (folders default to places in the data folder).

Reader = Callable[[dict, str, Any, dict], Any]


def _text(env: dict, name: str, default: str, _read: dict | None = None) -> str:
    return env.get(name, default)  # set but empty stays empty


def _text_or_default(env: dict, name: str, default: str, _read: dict | None = None) -> str:
    return env.get(name) or default


def _url(env: dict, name: str, default: str, _read: dict | None = None) -> str:
    return (env.get(name) or default).rstrip("/")


def _trimmed(env: dict, name: str, default: str, _read: dict | None = None) -> str:
    return env.get(name, default).strip()


def _domain(env: dict, name: str, default: str, _read: dict | None = None) -> str:
    return env.get(name, default).strip().lower()


def _lower(env: dict, name: str, default: str, _read: dict | None = None) -> str:
    return (env.get(name) or default).lower()


def _upper(env: dict, name: str, default: str, _read: dict | None = None) -> str:
    return (env.get(name) or default).upper()


def _comma_list(env: dict, name: str, default: tuple, _read: dict | None = None) -> tuple[str, ...]:
    return tuple(item.strip() for item in env.get(name, "").split(",") if item.strip()) or default


def _int(env: dict, name: str, default: int, _read: dict | None = None) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a whole number") from None


def _float(env: dict, name: str, default: float, _read: dict | None = None) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a number") from None


def _bool(env: dict, name: str, default: bool, _read: dict | None = None) -> bool:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r}: expected true or false")


def _absolute_folder(env: dict, name: str, default: Path, _read: dict | None = None) -> Path:
    return Path(env.get(name) or default).absolute()


def _folder(env: dict, name: str, default: Path, _read: dict | None = None) -> Path:
    return Path(env.get(name) or default)


def _in_data_dir(env: dict, name: str, default: Path, read: dict) -> Path:
    """A folder that defaults to its place in the data folder (``var/outbox`` -> ``<data_dir>/outbox``)."""
    return Path(env.get(name) or read["data_dir"] / default.relative_to(DEFAULT_DATA_DIR))


# How a field is read when its declaration names no reader: by its type.
_BY_TYPE: dict[str, Reader] = {"str": _text, "int": _int, "float": _float, "bool": _bool}


def setting(env: str, default: Any, *, read: Reader | None = None, shown: str = "", provider: str = "",
            sending: str = "", secret: bool = False) -> Any:
    """Declare a field of ``Settings``: read from the environment variable ``env``.

    ``read``: how, when the field's type is not enough; ``shown``: the default
    in words, for the README, when the value itself does not say it.
    ``provider``: the transport whose setting it is (a TRANSPORT value);
    ``sending``: the key a publication's ``sending.<provider>:`` block may set
    it with (``connections`` is ``sending.connections``, for that transport);
    ``secret``: a publication names where it is (``<key>_env``, ``<key>_file``),
    never writes it.
    """
    metadata = {"env": env, "read": read, "shown": shown, "provider": provider, "sending": sending, "secret": secret}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    # --- Where state lives, and what is shipped -------------------------------------------------
    data_dir: Path = setting("NEWSLETTER_DATA_DIR", DEFAULT_DATA_DIR, read=_absolute_folder,
                             shown="`var/` in the folder the process starts in")
    templates_dir: Path = setting("NEWSLETTER_TEMPLATES_DIR", TEMPLATES_DIR, read=_folder,
                                  shown="the templates shipped in the package")

    # --- Database and broker --------------------------------------------------------------------
    # The system of record. Default: a SQLite file in data_dir.
    database_url: str = setting("DATABASE_URL", "", shown="SQLite in `var/`")
    # Broker and shared rate limiter. Empty: embedded broker, local limiter.
    redis_url: str = setting("REDIS_URL", "")

    # --- Web app and links ----------------------------------------------------------------------
    # Where the web app is served; links in emails point here.
    base_url: str = setting("BASE_URL", "http://127.0.0.1:8000", read=_url)
    # Signing keys for links (newest first; older ones still verify).
    secret_keys: tuple[str, ...] = setting("SECRET_KEYS", (), read=_comma_list, shown="a generated key in `var/`")
    web_copy_dir: Path = setting("WEB_COPY_DIR", DEFAULT_DATA_DIR / "web", read=_in_data_dir,
                                 shown="`var/web`")  # a build's web/ folder: images of issues
    web_proxy_count: int = setting("WEB_PROXY_COUNT", 0)  # proxies in front of the app whose X-Forwarded-* to trust
    # Sign-up and confirmation.
    confirm_max_age_seconds: int = setting("CONFIRM_MAX_AGE_SECONDS", 7 * 24 * 3600)  # how long a confirm link works
    # At most one confirm email per address per window.
    signup_email_window_seconds: int = setting("SIGNUP_EMAIL_WINDOW_SECONDS", 900)
    signup_requests_per_client: int = setting("SIGNUP_REQUESTS_PER_CLIENT", 10)  # sign-up posts per client address...
    signup_client_window_seconds: int = setting("SIGNUP_CLIENT_WINDOW_SECONDS", 600)  # ...per this many seconds
    # The console and the ops dashboard (/ops): how long a login lasts, and the login limit.
    ops_session_seconds: int = setting("OPS_SESSION_SECONDS", 12 * 3600)
    ops_login_attempts: int = setting("OPS_LOGIN_ATTEMPTS", 10)  # failed logins per client address and account...
    ops_login_window_seconds: int = setting("OPS_LOGIN_WINDOW_SECONDS", 900)  # ...per this many seconds

    # --- Transports: how mail leaves, and each one's own settings (docs/providers.md) ------------
    transport: str = setting("TRANSPORT", "outbox")  # one of TRANSPORTS, below
    # outbox: a folder of .eml files.
    outbox_dir: Path = setting("OUTBOX_DIR", DEFAULT_DATA_DIR / "outbox", read=_in_data_dir, shown="`var/outbox`",
                               provider="outbox", sending="dir")
    # smtp: a relay or server, security starttls, tls or none (newsletter.transports.smtp).
    smtp_host: str = setting("SMTP_HOST", "127.0.0.1", provider="smtp", sending="host")
    smtp_port: int = setting("SMTP_PORT", 25, provider="smtp", sending="port")
    smtp_username: str = setting("SMTP_USERNAME", "", provider="smtp", sending="username")
    smtp_password: str = setting("SMTP_PASSWORD", "", provider="smtp", sending="password", secret=True)
    smtp_security: str = setting("SMTP_SECURITY", "starttls", provider="smtp", sending="security")
    smtp_verify_certificates: bool = setting("SMTP_VERIFY_CERTIFICATES", True, provider="smtp",
                                             sending="verify_certificates")
    smtp_timeout: float = setting("SMTP_TIMEOUT", 30.0, provider="smtp", sending="timeout")
    # Connections in flight per worker process.
    smtp_connections: int = setting("SMTP_CONNECTIONS", 4, provider="smtp", sending="connections")
    smtp_messages_per_connection: int = setting("SMTP_MESSAGES_PER_CONNECTION", 500, provider="smtp",
                                                sending="messages_per_connection")
    # Use PIPELINING (RFC 2920) when the server offers it, and stream with BDAT
    # (RFC 3030) when it offers CHUNKING too, up to a window of messages per connection.
    smtp_pipelining: bool = setting("SMTP_PIPELINING", True, provider="smtp", sending="pipelining")
    smtp_chunking: bool = setting("SMTP_CHUNKING", True, provider="smtp")
    smtp_window: int = setting("SMTP_WINDOW", 16, provider="smtp")
    # Email provider APIs. API URLs are settings so tests can point them at
    # local servers; keys are secrets. These two are every provider's.
    http_connect_timeout: float = setting("HTTP_CONNECT_TIMEOUT", 10.0)
    http_read_timeout: float = setting("HTTP_READ_TIMEOUT", 60.0)
    # ses: Amazon SES; its events arrive through SNS.
    ses_region: str = setting("SES_REGION", "", provider="ses", sending="region")
    # Empty: boto3's own chain (instance role, profile).
    ses_access_key_id: str = setting("SES_ACCESS_KEY_ID", "", provider="ses", sending="access_key_id")
    ses_secret_access_key: str = setting("SES_SECRET_ACCESS_KEY", "", provider="ses", sending="secret_access_key",
                                         secret=True)
    ses_endpoint_url: str = setting("SES_ENDPOINT_URL", "", provider="ses", sending="endpoint_url")
    ses_configuration_set: str = setting("SES_CONFIGURATION_SET", "", provider="ses", sending="configuration_set")
    # SendEmail calls in flight per worker process.
    ses_connections: int = setting("SES_CONNECTIONS", 8, provider="ses", sending="connections")
    # SES notifications are accepted only from these topics.
    sns_topic_arns: tuple[str, ...] = setting("SNS_TOPIC_ARN", (), read=_comma_list, provider="ses")
    # sendgrid
    sendgrid_api_key: str = setting("SENDGRID_API_KEY", "", provider="sendgrid", sending="api_key", secret=True)
    sendgrid_api_url: str = setting("SENDGRID_API_URL", "https://api.sendgrid.com", read=_url, provider="sendgrid",
                                    sending="api_url")
    sendgrid_batch_size: int = setting("SENDGRID_BATCH_SIZE", 1000, provider="sendgrid", sending="batch_size")
    # The signed event webhook's verification key (base64 DER or PEM).
    sendgrid_webhook_public_key: str = setting("SENDGRID_WEBHOOK_PUBLIC_KEY", "", provider="sendgrid")
    # postmark
    postmark_server_token: str = setting("POSTMARK_SERVER_TOKEN", "", provider="postmark", sending="server_token",
                                         secret=True)
    postmark_api_url: str = setting("POSTMARK_API_URL", "https://api.postmarkapp.com", read=_url,
                                    provider="postmark", sending="api_url")
    postmark_message_stream: str = setting("POSTMARK_MESSAGE_STREAM", "broadcast", read=_text_or_default,
                                           provider="postmark", sending="message_stream")
    postmark_batch_size: int = setting("POSTMARK_BATCH_SIZE", 500, provider="postmark", sending="batch_size")
    postmark_webhook_username: str = setting("POSTMARK_WEBHOOK_USERNAME", "", provider="postmark")
    postmark_webhook_password: str = setting("POSTMARK_WEBHOOK_PASSWORD", "", provider="postmark")
    # mailgun
    mailgun_api_key: str = setting("MAILGUN_API_KEY", "", provider="mailgun", sending="api_key", secret=True)
    mailgun_domain: str = setting("MAILGUN_DOMAIN", "", provider="mailgun", sending="domain")
    mailgun_api_url: str = setting("MAILGUN_API_URL", "https://api.mailgun.net", read=_url, provider="mailgun",
                                   sending="api_url")
    mailgun_batch_size: int = setting("MAILGUN_BATCH_SIZE", 1000, provider="mailgun", sending="batch_size")
    mailgun_webhook_signing_key: str = setting("MAILGUN_WEBHOOK_SIGNING_KEY", "", provider="mailgun")

    # --- Sending: batches, the account's rate limits, retries, claims ---------------------------
    # Recipients per batch task: each costs a Celery task, a claim and a few statements.
    batch_size: int = setting("BATCH_SIZE", 500)
    # Rate limits of the provider account (docs/operations.md, "Rate limits"); 0: unlimited.
    rate_limit_account: str = setting("RATE_LIMIT_ACCOUNT", "", read=_trimmed,
                                      shown="made from the transport and its login")  # empty: the transport's
    rate_limit_per_second: float = setting("RATE_LIMIT_PER_SECOND", 0.0)
    rate_limit_per_hour: int = setting("RATE_LIMIT_PER_HOUR", 0)
    rate_limit_per_day: int = setting("RATE_LIMIT_PER_DAY", 0)
    # A longer wait gives the messages back until then.
    rate_limit_max_wait_seconds: float = setting("RATE_LIMIT_MAX_WAIT_SECONDS", 60.0)
    # The pause after a throttle that does not say how long.
    rate_limit_throttle_seconds: float = setting("RATE_LIMIT_THROTTLE_SECONDS", 30.0)
    retry_attempts: int = setting("RETRY_ATTEMPTS", 8)
    retry_window_seconds: int = setting("RETRY_WINDOW_SECONDS", 6 * 3600)
    retry_base_delay_seconds: float = setting("RETRY_BASE_DELAY_SECONDS", 30.0)
    error_budget_ratio: float = setting("ERROR_BUDGET_RATIO", 0.2)  # pause a send when this share of attempts fail
    error_budget_minimum: int = setting("ERROR_BUDGET_MINIMUM", 50)  # ...after at least this many attempts
    # A batch run that made no progress this long loses its claim.
    claim_timeout_seconds: int = setting("CLAIM_TIMEOUT_SECONDS", 600)
    # A claim not renewed this long is taken over (the holder renews it).
    claim_lease_seconds: int = setting("CLAIM_LEASE_SECONDS", 30)
    beat_interval_seconds: float = setting("BEAT_INTERVAL_SECONDS", 5.0)
    # A batch enqueued this long ago that no run has begun, while the send queue
    # is empty, was lost by the broker: the beat hands it out again.
    batch_lost_seconds: int = setting("BATCH_LOST_SECONDS", 60)

    # --- Return path and signatures -------------------------------------------------------------
    # Set: envelope sender bounces+<signed delivery id>@bounce_domain (VERP).
    bounce_domain: str = setting("BOUNCE_DOMAIN", "", read=_domain)
    dkim_private_key_path: str = setting("DKIM_PRIVATE_KEY_PATH", "")  # set: sign every message (PEM key)
    dkim_selector: str = setting("DKIM_SELECTOR", "")
    # Empty: the domain of the publication's From address.
    dkim_domain: str = setting("DKIM_DOMAIN", "", read=_domain, shown="the From address's domain")

    # --- Events: provider webhooks, bounces, complaints, suppression ----------------------------
    # A signed webhook older than this is refused. Mailgun retries a failed
    # webhook for 8 hours, and SendGrid for 24, with the original timestamp.
    webhook_max_age_seconds: int = setting("WEBHOOK_MAX_AGE_SECONDS", 25 * 3600)
    soft_bounce_threshold: int = setting("SOFT_BOUNCE_THRESHOLD", 3)  # soft bounces of different messages ...
    soft_bounce_window_days: int = setting("SOFT_BOUNCE_WINDOW_DAYS", 30)  # ... within this many days suppress

    # --- Privacy: how long what is not needed is kept -------------------------------------------
    # Provider payloads, kept for debugging.
    raw_event_retention_days: int = setting("RAW_EVENT_RETENTION_DAYS", 30)
    # Sign-ups never confirmed are forgotten after this long.
    unconfirmed_retention_days: int = setting("UNCONFIRMED_RETENTION_DAYS", 30)

    # --- Operations: worker heartbeats, problem thresholds, metrics, logs -----------------------
    worker_heartbeat_seconds: float = setting("WORKER_HEARTBEAT_SECONDS", 5.0)  # a worker 3 beats late is gone
    stall_warning_seconds: int = setting("STALL_WARNING_SECONDS", 300)  # a sending send with no progress this long
    # A sending send whose server keeps asking its account to slow down, with nothing sent this long.
    throttled_send_warning_seconds: int = setting("THROTTLED_SEND_WARNING_SECONDS", 60)
    bounce_rate_warning: float = setting("BOUNCE_RATE_WARNING", 0.02)
    complaint_rate_warning: float = setting("COMPLAINT_RATE_WARNING", 0.001)  # 0.3% is where mailbox providers act
    metrics_token: str = setting("METRICS_TOKEN", "")  # bearer token for /metrics; empty: open
    log_format: str = setting("LOG_FORMAT", "text", read=_lower)  # text | json
    log_level: str = setting("LOG_LEVEL", "INFO", read=_upper)
    # Tests and CI: a missing PostgreSQL or Redis is a failure, not a skip.
    require_services: bool = setting("NEWSLETTER_REQUIRE_SERVICES", False)

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


# The TRANSPORT values, in the order their settings are declared: each names
# a module, newsletter.transports.<name>.
TRANSPORTS = tuple(dict.fromkeys(f.metadata["provider"] for f in fields(Settings) if f.metadata["provider"]))


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
    read: dict[str, Any] = {}
    for declared in fields(Settings):  # data_dir first: some folders default to places in it
        reader = declared.metadata["read"] or _BY_TYPE[declared.type]
        read[declared.name] = reader(env, declared.metadata["env"], declared.default, read)
    s = Settings(**read)
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
