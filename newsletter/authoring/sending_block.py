"""A publication's ``sending:`` block: how its mail leaves, read from publication.yaml.

Takes in the block as written (every setting optional) and hands on a
``SendingBlock``: non-secret values only. A secret is named, never held: a
field ``password_env`` or ``password_file`` names an environment variable or
a mounted secrets file, read by the process that sends (``lane_settings``).
A secret written inline is refused here, at its line, since editors keep
publication.yaml in version control.

``lane_settings`` lays a block over the install's ``Settings`` (the
environment's defaults), so transports, links and VERP use it unchanged.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

from newsletter.config import TRANSPORTS, Settings, read_secret, secret_is_set
from newsletter.authoring.fields import Fields
from newsletter.errors import Problem, spelling_fix
from newsletter.authoring.yamlsource import LineMap, location

SECRET = "secret"  # a field given as <name>_env or <name>_file, never inline

_KINDS = {"str": str, "int": int, "float": float, "bool": bool, "Path": "path"}


def _transport_fields() -> tuple[dict[str, dict[str, tuple[str, type | str]]], dict[str, str]]:
    """Each transport's sub-block, as config.py declares it: YAML key -> (Settings
    field, kind); and the field ``sending.connections`` sets, for each transport that has
    one (connections, for SMTP, or calls, for SES, in flight per worker process)."""
    blocks: dict[str, dict[str, tuple[str, type | str]]] = {name: {} for name in TRANSPORTS}
    connections = {}
    for declared in fields(Settings):
        key, transport = declared.metadata["sending"], declared.metadata["provider"]
        if key == "connections":
            connections[transport] = declared.name
        elif key:
            blocks[transport][key] = (declared.name, SECRET if declared.metadata["secret"] else _KINDS[declared.type])
    return blocks, connections


TRANSPORT_FIELDS, CONNECTIONS_FIELD = _transport_fields()
BLOCK_FIELDS = (
    "base_url", "transport", "account", "connections", "rate", "bounce_domain",
    "list_id_domain", "feedback_id_sender", "dkim", "clicks", *TRANSPORT_FIELDS,
)
# sending.clicks: off ("", the default), counts only, or counts and each person's history.
CLICKS_AGGREGATE = "aggregate"
CLICKS_PER_PERSON = "per_person"
CLICK_MODES = (CLICKS_AGGREGATE, CLICKS_PER_PERSON)
RATE_FIELDS = ("per_second", "per_hour", "per_day")
DKIM_FIELDS = ("selector", "domain", "key_file", "key_env", "active_from")
_DOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$")
_SELECTOR = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SENDER_ID = re.compile(r"^[A-Za-z0-9._-]{1,40}$")


@dataclass(frozen=True)
class SecretRef:
    """Where a secret is: an environment variable or a secrets file."""

    field: str  # "sending.smtp.password", for messages
    env: str = ""
    file: str = ""

    def read(self, slug: str, environ: dict | None = None) -> str:
        how = f"{self.field}_env" if self.env else f"{self.field}_file"
        return read_secret(env_name=self.env, file=self.file, where=f"publication '{slug}', {how}", environ=environ)

    def is_set(self, environ: dict | None = None) -> bool:
        return secret_is_set(env_name=self.env, file=self.file, environ=environ)

    @property
    def named(self) -> str:
        return f"${self.env}" if self.env else self.file


@dataclass(frozen=True)
class DkimKeyRef:
    """One DKIM key of a publication: its selector, domain, and where its private key is."""

    selector: str
    domain: str
    key_file: str = ""
    key_env: str = ""
    active_from: datetime | None = None

    def secret(self, number: int) -> SecretRef:
        """Where its private key is; ``number`` is its place in the list, from 1."""
        return SecretRef(f"sending.dkim[{number}], key", env=self.key_env, file=self.key_file)


@dataclass(frozen=True)
class SendingBlock:
    """What a publication sets about sending; empty values take the environment's."""

    base_url: str = ""
    transport: str = ""
    account: str = ""
    options: tuple[tuple[str, object], ...] = ()  # (Settings field, value), non-secret
    secrets: tuple[tuple[str, SecretRef], ...] = ()  # (Settings field, where it is)
    connections: int = 0
    per_second: float = 0.0
    per_hour: int = 0
    per_day: int = 0
    bounce_domain: str = ""
    list_id_domain: str = ""
    feedback_id_sender: str = ""
    dkim: tuple[DkimKeyRef, ...] = ()
    clicks: str = ""  # "" (links left as written), "aggregate" or "per_person": docs/clicks.md

    @property
    def sets_transport(self) -> bool:
        """True when mail of this publication leaves by a lane of its own."""
        return bool(self.transport or self.options or self.secrets or self.connections or self.account
                    or self.per_second or self.per_hour or self.per_day)

    def to_json(self) -> dict:
        data = {
            "base_url": self.base_url, "transport": self.transport, "account": self.account,
            "options": {k: str(v) if k == "outbox_dir" else v for k, v in self.options},
            "secrets": {k: {"field": r.field, "env": r.env, "file": r.file} for k, r in self.secrets},
            "connections": self.connections, "per_second": self.per_second, "per_hour": self.per_hour,
            "per_day": self.per_day, "bounce_domain": self.bounce_domain, "list_id_domain": self.list_id_domain,
            "feedback_id_sender": self.feedback_id_sender,
            "dkim": [{"selector": k.selector, "domain": k.domain, "key_file": k.key_file, "key_env": k.key_env,
                      "active_from": k.active_from.isoformat() if k.active_from else ""} for k in self.dkim],
            "clicks": self.clicks,
        }
        return {k: v for k, v in data.items() if v not in ("", 0, 0.0, {}, [])}

    @classmethod
    def from_json(cls, data: dict | None) -> "SendingBlock":
        data = data or {}
        return cls(
            base_url=data.get("base_url", ""),
            transport=data.get("transport", ""),
            account=data.get("account", ""),
            options=tuple(sorted(data.get("options", {}).items())),
            secrets=tuple(sorted((k, SecretRef(v["field"], v.get("env", ""), v.get("file", "")))
                                 for k, v in data.get("secrets", {}).items())),
            connections=int(data.get("connections", 0)),
            per_second=float(data.get("per_second", 0)),
            per_hour=int(data.get("per_hour", 0)),
            per_day=int(data.get("per_day", 0)),
            bounce_domain=data.get("bounce_domain", ""),
            list_id_domain=data.get("list_id_domain", ""),
            feedback_id_sender=data.get("feedback_id_sender", ""),
            dkim=tuple(DkimKeyRef(k["selector"], k["domain"], k.get("key_file", ""), k.get("key_env", ""),
                                  datetime.fromisoformat(k["active_from"]) if k.get("active_from") else None)
                       for k in data.get("dkim", [])),
            clicks=data.get("clicks", ""),
        )

    def secret_refs(self) -> list[SecretRef]:
        """Every secret the block names: transport credentials and DKIM keys."""
        return [ref for _, ref in self.secrets] + [key.secret(n) for n, key in enumerate(self.dkim, start=1)]


# --- the settings a publication's mail goes out with -------------------------------------


def lane_settings(settings: Settings, block: SendingBlock, slug: str, *, secrets: bool = True,
                  environ: dict | None = None) -> Settings:
    """The install's settings with the publication's laid over them.

    With ``secrets``, every secret the block names is read now (a worker, at
    send time); a missing one raises ``ConfigError`` naming the publication
    and the field. Without, the links and addresses are right but
    credentials are the environment's (the web app building a link).
    """
    changes: dict[str, object] = dict(block.options)
    if block.transport and block.transport != settings.transport:
        # Another transport than the environment's: none of its credentials carry over.
        for name, kind in TRANSPORT_FIELDS.get(block.transport, {}).values():
            if kind == SECRET and name not in changes:
                changes[name] = ""
    if "outbox_dir" in changes:
        changes["outbox_dir"] = Path(str(changes["outbox_dir"]))
    if secrets:
        for name, ref in block.secrets:
            changes[name] = ref.read(slug, environ)
    if block.base_url:
        changes["base_url"] = block.base_url
    if block.transport:
        changes["transport"] = block.transport
    transport = block.transport or settings.transport
    if block.connections and transport in CONNECTIONS_FIELD:
        changes[CONNECTIONS_FIELD[transport]] = block.connections
    if block.per_second:
        changes["rate_limit_per_second"] = block.per_second
    if block.per_hour:
        changes["rate_limit_per_hour"] = block.per_hour
    if block.per_day:
        changes["rate_limit_per_day"] = block.per_day
    if block.account:
        changes["rate_limit_account"] = block.account
    elif block.options or block.secrets or (block.transport and block.transport != settings.transport):
        changes["rate_limit_account"] = ""  # other credentials: not the environment's account
    if block.bounce_domain:
        changes["bounce_domain"] = block.bounce_domain
    return replace(settings, **changes)


# --- links: https and public --------------------------------------------------------------


def link_problem(url: str) -> str:
    """Why ``url`` is no good in a message's links ("" when it is): not https, or
    pointing at loopback or a private address (RFC 8058 wants https, and a
    subscriber cannot reach a private one)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".").lower()
    if parts.scheme != "https":
        return f"{url} does not use https"
    if not host or host == "localhost" or host.endswith(".localhost"):
        return f"{url} points at this machine (loopback)"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "" if "." in host else f"{url} has a host name only a local network knows"
    if address.is_loopback:
        return f"{url} points at a loopback address"
    if not address.is_global:
        return f"{url} points at a private address"
    return ""


# --- reading the block ------------------------------------------------------------------


def read_sending_block(fields: Fields, slug: str) -> SendingBlock:
    """The ``sending:`` group of a publication.yaml; problems go to ``fields.problems``."""
    values = fields.mapping("sending")
    if values is None:
        return SendingBlock()
    block = Fields(values, fields.path, f"publication '{slug}', `sending`", fields.problems, BLOCK_FIELDS)
    block.check_unknown()
    transport = block.text("transport")
    if transport and transport not in TRANSPORTS:
        block.problem("transport", f"publication '{slug}': `sending.transport` {transport!r} is not a transport we know",
                      f"use one of {', '.join(TRANSPORTS)}")
        transport = ""
    options: dict[str, object] = {}
    secrets: dict[str, SecretRef] = {}
    for name in TRANSPORT_FIELDS:
        if not block.has(name):
            continue
        if name != (transport or name) and transport:
            block.problem(name, f"publication '{slug}': `sending.{name}` is set but `sending.transport` is {transport!r}",
                          f"remove `{name}:` or set `transport: {name}`")
        _read_transport_fields(block, name, slug, options, secrets)
    rate = _read_rate(block, slug)
    return SendingBlock(
        base_url=_base_url(block, slug),
        transport=transport,
        account=block.text("account"),
        options=tuple(sorted(options.items())),
        secrets=tuple(sorted(secrets.items())),
        connections=_whole(block, "connections", f"publication '{slug}': `sending.connections`") or 0,
        per_second=rate[0], per_hour=rate[1], per_day=rate[2],
        bounce_domain=_domain(block, "bounce_domain", slug),
        list_id_domain=_domain(block, "list_id_domain", slug),
        feedback_id_sender=_sender_id(block, slug),
        dkim=_read_dkim(block, slug),
        clicks=_clicks(block, slug),
    )


def _read_transport_fields(block: Fields, name: str, slug: str, options: dict, secrets: dict) -> None:
    values = block.mapping(name)
    if values is None:
        return
    known = TRANSPORT_FIELDS[name]
    allowed = tuple(k for key, (_, kind) in known.items() for k in
                    ((f"{key}_env", f"{key}_file") if kind == SECRET else (key,)))
    sub = Fields(values, block.path, f"publication '{slug}', `sending.{name}`", block.problems, allowed)
    for key in values:
        base = key.removesuffix("_env").removesuffix("_file")
        if key in known and known[key][1] == SECRET:
            sub.problem(key, f"publication '{slug}': `sending.{name}.{key}` is a secret written into publication.yaml",
                        f"never put secrets in this file (it is kept in version control): remove the value, "
                        f"rotate it if it was committed, and write `{key}_env: VARIABLE` (an environment variable) "
                        f"or `{key}_file: /run/secrets/...` (a secrets file) instead")
        elif key not in allowed and base not in known:
            sub.problem(key, f"publication '{slug}': `sending.{name}` has an unknown field `{key}`",
                        spelling_fix(key, allowed, "fields it can have are"))
    for key, (setting, kind) in known.items():
        where = f"publication '{slug}': `sending.{name}.{key}`"
        if kind == SECRET:
            env, file = sub.text(f"{key}_env"), sub.text(f"{key}_file")
            if env and file:
                sub.problem(f"{key}_file", f"{where} names both an environment variable and a file",
                            f"keep one of `{key}_env` and `{key}_file`")
            elif env and not _ENV_NAME.match(env):
                sub.problem(f"{key}_env", f"{where}_env should name an environment variable, not {env!r}",
                            "write the variable's name, like TWB_SMTP_PASSWORD, not its value")
            elif env or file:
                secrets[setting] = SecretRef(f"sending.{name}.{key}", env=env, file=file)
        elif kind is int:
            value = _whole(sub, key, where)
            if value is not None:
                options[setting] = value
        elif kind is float:
            value = values.get(key)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                    sub.problem(key, f"{where} should be a number of seconds, not {value!r}", f"write e.g. `{key}: 30`")
                else:
                    options[setting] = float(value)
        elif kind is bool:
            if key in values:
                options[setting] = sub.flag(key)
        else:
            value = sub.text(key)
            if value and key in ("api_url", "endpoint_url") and not urlsplit(value).netloc:
                sub.problem(key, f"{where} should be a full address like https://api.example.com, not {value!r}",
                            "copy the provider's API address from its documentation")
            elif value and key == "security" and value not in ("starttls", "tls", "none"):
                sub.problem(key, f"{where} {value!r} is not one we know", "use starttls, tls or none")
            elif value:
                options[setting] = value.rstrip("/") if key.endswith("_url") else value


def _base_url(block: Fields, slug: str) -> str:
    url = block.text("base_url")
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        block.problem("base_url", f"publication '{slug}': `sending.base_url` should be a full web address, not {url!r}",
                      "write the address the web app is served at for this publication, like https://news.example.org")
        return ""
    if parts.query or parts.fragment:
        block.problem("base_url", f"publication '{slug}': `sending.base_url` {url!r} has a query or fragment",
                      "give the web app's address only, like https://news.example.org")
    return url.rstrip("/")


def _clicks(block: Fields, slug: str) -> str:
    value = block.text("clicks")
    if value and value not in CLICK_MODES:
        block.problem("clicks", f"publication '{slug}': `sending.clicks` {value!r} is not a way of counting clicks we know",
                      "write `clicks: aggregate` (counts only), `clicks: per_person` (only with a lawful basis), "
                      "or leave it out (links are left as written)")
        return ""
    return value


def _whole(fields: Fields, key: str, where: str) -> int | None:
    value = fields.values.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        fields.problem(key, f"{where} should be a whole number of at least 1, not {value!r}", f"write e.g. `{key}: 8`")
        return None
    return value


def _read_rate(block: Fields, slug: str) -> tuple[float, int, int]:
    values = block.mapping("rate")
    if values is None:
        return 0.0, 0, 0
    rate = Fields(values, block.path, f"publication '{slug}', `sending.rate`", block.problems, RATE_FIELDS)
    rate.check_unknown()
    per_second = values.get("per_second")
    if per_second is not None and (isinstance(per_second, bool) or not isinstance(per_second, (int, float))
                                   or per_second <= 0):
        rate.problem("per_second", f"publication '{slug}': `sending.rate.per_second` should be a number above 0, "
                     f"not {per_second!r}", "write e.g. `per_second: 14` (your provider's limit), or leave it out")
        per_second = None
    hour = _whole(rate, "per_hour", f"publication '{slug}': `sending.rate.per_hour`")
    day = _whole(rate, "per_day", f"publication '{slug}': `sending.rate.per_day`")
    return float(per_second or 0), hour or 0, day or 0


def _domain(block: Fields, key: str, slug: str) -> str:
    value = block.text(key).lower()
    if value and not _DOMAIN.match(value):
        block.problem(key, f"publication '{slug}': `sending.{key}` should be a domain name, not {value!r}",
                      "write a domain like bounces.example.org")
        return ""
    return value


def _sender_id(block: Fields, slug: str) -> str:
    value = block.text("feedback_id_sender")
    if value and not _SENDER_ID.match(value):
        block.problem("feedback_id_sender", f"publication '{slug}': `sending.feedback_id_sender` should be a short "
                      f"name of letters, digits, dots and hyphens, not {value!r}", "write e.g. `twb-news`")
        return ""
    return value


def _read_dkim(block: Fields, slug: str) -> tuple[DkimKeyRef, ...]:
    keys = []
    for number, (entry, line) in enumerate(block.entries("dkim"), start=1):
        where = f"publication '{slug}': `sending.dkim` key {number}"
        if not isinstance(entry, LineMap):
            block.problems.append(_problem_at(block, line, f"{where} should be a group of fields",
                                              "write `- {selector: ..., domain: ..., key_file: ...}`"))
            continue
        key = Fields(entry, block.path, where, block.problems, DKIM_FIELDS)
        key.check_unknown()
        selector = key.text("selector", required=True)
        if selector and not _SELECTOR.match(selector):
            key.problem("selector", f"{where}: `selector` {selector!r} cannot be a DNS label",
                        "use letters, digits and hyphens, like s2026a")
        domain = _domain(key, "domain", slug) if key.has("domain") else ""
        if not key.has("domain"):
            key.problem(None, f"{where} has no `domain`", "add `domain:` (the d= the signature claims, e.g. example.org)")
        key_file, key_env = key.text("key_file"), key.text("key_env")
        if key_file and key_env:
            key.problem("key_env", f"{where} names both `key_file` and `key_env`", "keep one")
        elif not key_file and not key_env:
            key.problem(None, f"{where} names no private key",
                        "add `key_file: /run/secrets/...` or `key_env: VARIABLE` (never the key itself)")
        keys.append(DkimKeyRef(selector, domain, key_file, key_env, _active_from(key, where)))
    return tuple(keys)


def _active_from(key: Fields, where: str) -> datetime | None:
    value = key.values.get("active_from")
    if value in (None, ""):
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            value = None
    if not isinstance(value, datetime):
        key.problem("active_from", f"{where}: `active_from` should be a date and time, like 2026-12-01T00:00:00Z",
                    "write the UTC time the key starts signing, ending in Z")
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _problem_at(fields: Fields, line: int, message: str, fix: str) -> Problem:
    return Problem(location(fields.path, line), message, fix)
