"""Settings from the environment: each declared once, read the same way, and
listed in README.md's configuration tables with the default it has."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from newsletter.config import DEFAULT_DATA_DIR, TRANSPORTS, ConfigError, Settings, settings_from

README = Path(__file__).resolve().parent.parent / "README.md"
DECLARED = {f.metadata["env"]: f for f in fields(Settings)}


class Watched(dict):
    """An environment that remembers every name asked of it."""

    def __init__(self, *args):
        super().__init__(*args)
        self.asked: set[str] = set()

    def get(self, name, default=None):
        self.asked.add(name)
        return super().get(name, default)

    def __getitem__(self, name):
        self.asked.add(name)
        return super().__getitem__(name)

    def __contains__(self, name):
        self.asked.add(name)
        return super().__contains__(name)


def variables_read() -> set[str]:
    env = Watched()
    settings_from(env)
    return env.asked


def test_every_variable_read_is_declared_once_and_every_declared_one_is_read():
    names = [f.metadata["env"] for f in fields(Settings)]
    assert len(names) == len(set(names))
    assert variables_read() == set(names)


def shown(name: str) -> str:
    """A variable's default as README.md writes it."""
    declared = DECLARED[name]
    if declared.metadata["shown"]:
        return declared.metadata["shown"]
    value = declared.default
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value in ("", ()):
        return "—"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def readme_rows(text: str) -> list[tuple[list[str], str]]:
    """(variables, default) for each row of the tables under ## Configuration."""
    section = text.split("\n## Configuration\n", 1)[1].split("\n### ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) < 2 or cells[0] in ("variable", "---"):
            continue
        rows.append((re.findall(r"`([^`]+)`", cells[0]), cells[1]))
    return rows


def drift(text: str) -> list[str]:
    """What the README's configuration tables say that config.py does not."""
    problems, listed = [], []
    for names, default in readme_rows(text):
        listed += names
        unknown = [n for n in names if n not in DECLARED]
        problems += [f"{n}: in the README, but config.py reads no such variable" for n in unknown]
        if unknown:
            continue
        defaults = [shown(n) for n in names]
        expected = defaults[0] if len(set(defaults)) == 1 else ", ".join(defaults)
        if default != expected and not default.startswith(expected + " ("):
            problems.append(f"{', '.join(names)}: the README says the default is {default!r}, config.py {expected!r}")
    problems += [f"{n}: listed twice in the README" for n in sorted({n for n in listed if listed.count(n) > 1})]
    problems += [f"{n}: read by config.py, missing from the README" for n in DECLARED if n not in listed]
    return problems


def test_the_readme_lists_every_variable_with_its_default():
    assert drift(README.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("row, found", [
    ("| `SMTP_PORT` | `26` | |", "the default is '`26`'"),
    ("| `SMTP_PORTS` | `25` | |", "config.py reads no such variable"),
    ("| `RETRY_ATTEMPTS`, `RETRY_WINDOW_SECONDS` | `8` | |", "the default is '`8`'"),
])
def test_the_check_finds_drift(row, found):
    text = README.read_text(encoding="utf-8")
    table_end = text.index("\n\n", text.index("| `SMTP_HOST`"))
    assert any(found in p for p in drift(text[:table_end] + "\n" + row + text[table_end:]))
    without = text.replace("| `LOG_LEVEL` | `INFO` | |\n", "")
    assert drift(without) == ["LOG_LEVEL: read by config.py, missing from the README"]


def test_an_empty_environment_gives_the_declared_defaults(tmp_path):
    s = settings_from({"NEWSLETTER_DATA_DIR": str(tmp_path)})
    assert (s.transport, s.smtp_host, s.smtp_port, s.batch_size, s.retry_window_seconds) == ("outbox", "127.0.0.1", 25,
                                                                                            500, 21600)
    assert s.smtp_verify_certificates is True and s.require_services is False
    # Folders under the data folder follow it.
    assert (s.data_dir, s.outbox_dir, s.web_copy_dir) == (tmp_path, tmp_path / "outbox", tmp_path / "web")
    assert Settings().outbox_dir == DEFAULT_DATA_DIR / "outbox"


def test_values_are_read_as_their_type_and_tidied():
    s = settings_from({
        "SMTP_PORT": "587", "SMTP_TIMEOUT": "2.5", "SMTP_PIPELINING": "off", "SECRET_KEYS": " new, old ,,",
        "SNS_TOPIC_ARN": "arn:a,arn:b", "BASE_URL": "https://news.example.org/",
        "BOUNCE_DOMAIN": " Bounces.Example.ORG ",
        "LOG_FORMAT": "JSON", "LOG_LEVEL": "debug", "MAILGUN_API_URL": "https://api.eu.mailgun.net/",
        "POSTMARK_MESSAGE_STREAM": "", "RATE_LIMIT_ACCOUNT": " relay ", "SMTP_USERNAME": "",
    })
    assert (s.smtp_port, s.smtp_timeout, s.smtp_pipelining) == (587, 2.5, False)
    assert s.secret_keys == ("new", "old") and s.sns_topic_arns == ("arn:a", "arn:b")
    assert (s.base_url, s.mailgun_api_url) == ("https://news.example.org", "https://api.eu.mailgun.net")
    assert (s.bounce_domain, s.log_format, s.log_level) == ("bounces.example.org", "json", "DEBUG")
    assert (s.postmark_message_stream, s.rate_limit_account, s.smtp_username) == ("broadcast", "relay", "")


@pytest.mark.parametrize("env, message", [
    ({"SMTP_PORT": "twenty-five"}, "SMTP_PORT='twenty-five': expected a whole number"),
    ({"ERROR_BUDGET_RATIO": "most"}, "ERROR_BUDGET_RATIO='most': expected a number"),
    ({"SMTP_CHUNKING": "maybe"}, "SMTP_CHUNKING='maybe': expected true or false"),
    ({"TRANSPORT": "pigeon"}, "expected one of outbox, smtp, ses, sendgrid, postmark, mailgun"),
    ({"TRANSPORT": ""}, "TRANSPORT='': expected one of"),
    ({"RATE_LIMIT_PER_DAY": "-1"}, "RATE_LIMIT_PER_DAY=-1: must be 0 or more"),
])
def test_a_value_that_cannot_be_used_names_its_variable(env, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings_from(env)


def test_each_transport_is_a_group_of_settings_named_after_it():
    assert TRANSPORTS == ("outbox", "smtp", "ses", "sendgrid", "postmark", "mailgun")
    for declared in fields(Settings):
        provider = declared.metadata["provider"]
        assert not provider or declared.name.startswith(f"{provider}_") or declared.name == "sns_topic_arns"
        assert not declared.metadata["sending"] or provider, f"{declared.name}: a block field needs its transport"
