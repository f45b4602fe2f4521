"""The web app, a front door: public pages, unsubscribe, webhooks, the ops dashboard, the comms console.

Thin: each view reads the request, calls a stage, renders the answer. Nothing
in the stages imports it (tests/test_layering.py).

``create_app`` wires one blueprint per area; each lives in its own module
and exposes ``blueprint``. Served by gunicorn from the Procfile's web line.
"""

from __future__ import annotations

import importlib

from flask import Flask

from newsletter.authoring.render import COMPILED_TEMPLATES
from newsletter.config import Settings, get_settings
from newsletter.logs import configure_logging
from newsletter.wording import counted

# module -> URL prefix; each module defines ``blueprint``.
BLUEPRINTS = {
    "newsletter.web.public": "",
    "newsletter.web.unsubscribe": "",
    "newsletter.web.webhooks": "/webhooks",
    "newsletter.web.auth": "/console",  # the one login, for the console and the ops dashboard
    "newsletter.web.ops": "/ops",
    "newsletter.web.console": "/console",
    "newsletter.web.health": "",
    "newsletter.web.metrics": "",
    "newsletter.web.clicks": "",  # /c/<token>: counted links (docs/clicks.md)
    "newsletter.web.archive": "",  # the web copy: /<publication>/...
}


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or get_settings()
    configure_logging(settings)
    app = Flask(__name__, template_folder=str(settings.templates_dir / "site"))
    # Pages are compiled once per process, not once per app (Jinja checks each file's content).
    app.jinja_options = {**app.jinja_options, "bytecode_cache": COMPILED_TEMPLATES}
    app.add_template_filter(counted)  # {{ n | counted("recipient") }}: "1 recipient", "25,000 recipients"
    app.config["SETTINGS"] = settings
    app.config["SECRET_KEY"] = settings.signing_keys[0]
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024  # no form or webhook needs more
    for module_name, prefix in BLUEPRINTS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # an area not built yet
            if exc.name != module_name:
                raise
            continue
        app.register_blueprint(module.blueprint, url_prefix=prefix or None)
    return app


def settings_of(app: Flask) -> Settings:
    return app.config["SETTINGS"]
