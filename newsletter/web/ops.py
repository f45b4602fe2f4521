"""/ops: the operators' dashboard. Queues, workers, every send, and buttons to steer them.

Everything here needs a logged-in account that is an admin or an operator
of a publication (``newsletter.web.auth``: one login for this and the comms
console): pages redirect to the login, JSON answers 401. The numbers come from
``newsletter.ops.status``, the code behind ``newsletter ops status``; the
buttons act through ``newsletter.sending.scheduling``, as the CLI does, after a
confirmation page that works without JavaScript, and every action is logged
with the operator's address and recorded in the send's history.

The page refreshes itself: a small script of the app's own polls
``status.json``; without JavaScript a meta refresh reloads the page.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

from flask import (
    Blueprint,
    Response,
    flash,
    g,
    get_flashed_messages,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import Integer, cast, func, select
from sqlalchemy.orm import Session

from newsletter.authoring.issue import Colours
from newsletter.accounts import admins, audit
from newsletter.sending import scheduling, send_record
from newsletter.errors import InputError
from newsletter.errors import NotFound as NoSuchThing
from newsletter.ops.status import Status, collect_status
from newsletter.store.models import BatchRun, Delivery, DeliveryState, QueueSample, SendState
from newsletter.web import auth, security
from newsletter.web.pages import database, settings
from newsletter.wording import counted

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static" / "ops"
blueprint = Blueprint("ops", __name__, static_folder=str(STATIC), static_url_path="/static")

OPEN_ENDPOINTS = {"ops.login_form", "ops.static"}
POLL_SECONDS = 5
NO_SCRIPT_REFRESH_SECONDS = 30
CHART_HOURS = 6
CHART_BUCKET = timedelta(minutes=10)
# The dashboard's own script and its polling, on top of the site's policy.
EXTRA_POLICY = "; script-src 'self'; connect-src 'self'"


blueprint.record_once(auth.install)


@blueprint.after_request
def dashboard_policy(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = security.content_security_policy(response) + EXTRA_POLICY
    return response


# --- who is asking ------------------------------------------------------------------


@blueprint.before_request
def require_operator():
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    g.operator = auth.current_account()
    if g.operator is not None:
        with database() as db:
            if admins.may_operate(db, g.operator):
                return None
        if request.path.endswith(".json"):
            return jsonify(error="this account is not an operator"), 403
        return message_page("Not for this account", "The ops dashboard is for operators and admins.",
                            "Ask an admin for the operator role, or go to the console.", status=403, may_operate=False)
    if request.path.endswith(".json"):
        return jsonify(error="log in first", login=url_for("auth.login_form")), 401
    return redirect(auth.login_url(request.full_path.rstrip("?")))


@blueprint.get("/login")
def login_form():
    """The dashboard's old login address: the one login, coming back here."""
    return redirect(auth.login_url(request.args.get("next") or url_for("ops.dashboard")), code=301)


# --- the dashboard ---------------------------------------------------------------------


@blueprint.get("/")
def dashboard():
    with database() as db:
        status = collect_status(db, settings())
        charts = build_charts(db, status, status.generated_at)
    return ops_page("ops/dashboard.html", status=status, charts=charts, layout=layout_key(status),
                    actions=ACTIONS, actions_for=actions_for, poll_seconds=POLL_SECONDS,
                    refresh_seconds=NO_SCRIPT_REFRESH_SECONDS)


@blueprint.get("/publications")
def publications():
    """How each publication's mail leaves; secrets as set or not set."""
    from newsletter.sending.lanes import sending_summary
    from newsletter.store.publications import list_publications

    with database() as db:
        shown = [(row, sending_summary(settings(), row)) for row in list_publications(db)]
    return ops_page("ops/publications.html", publications=shown)


@blueprint.get("/status.json")
def status_json():
    """What ``newsletter ops status --json`` prints, and the page's layout key."""
    with database() as db:
        status = collect_status(db, settings())
    return jsonify(status.to_dict() | {"layout": layout_key(status)})


def layout_key(status: Status) -> str:
    """What decides the page's rows: when it changes the script reloads the page
    rather than patch numbers into rows that no longer fit."""
    return json.dumps([
        [(s.send_id, s.state, bool(s.failed)) for s in status.sends],
        [(p.kind, p.subject) for p in status.problems],
        [s.send_id for s in status.scheduled],
        [(w.node, w.state) for w in status.workers],
    ], separators=(",", ":"))


# --- steering a send -----------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    verb: str  # the button
    explanation: str  # what the confirmation page says will happen
    from_states: tuple[str, ...]
    run: Callable[[Session, int, admins.Operator], str]  # does it; says what was done


def _by(operator: admins.Operator) -> str:
    """Who steered the send, for its history."""
    return f"by {operator.email} from the dashboard"


def _pause(db: Session, send_id: int, operator: admins.Operator) -> str:
    scheduling.pause(db, send_id, by=_by(operator))
    return f"Send {send_id} is paused."


def _resume(db: Session, send_id: int, operator: admins.Operator) -> str:
    scheduling.resume(db, send_id, by=_by(operator))
    return f"Send {send_id} is sending again."


def _cancel(db: Session, send_id: int, operator: admins.Operator) -> str:
    scheduling.cancel(db, send_id, by=_by(operator))
    return f"Send {send_id} is cancelled."


def _retry_failed(db: Session, send_id: int, operator: admins.Operator) -> str:
    count = scheduling.retry_failed(db, send_id, by=_by(operator))
    if not count:
        return f"Send {send_id} has no failed recipient to retry (suppressed and hard-bounced ones stay failed)."
    return f"{counted(count, 'failed recipient')} of send {send_id} will be sent again."


ACTIONS = {
    "pause": Action("Pause", "Workers stop before their next chunk of messages. Nobody is sent to twice; "
                    "you can resume later.", (SendState.SENDING,), _pause),
    "resume": Action("Resume", "Workers pick the send up again where it stopped.", (SendState.PAUSED,), _resume),
    "cancel": Action("Cancel", "The send ends for good: recipients not yet sent to are marked cancelled "
                     "and will not get this issue. This cannot be undone.", (SendState.SCHEDULED, SendState.SENDING, SendState.PAUSED), _cancel),
    "retry-failed": Action("Retry failed", "The recipients whose delivery failed are sent to again, and "
                           "nobody else. Suppressed addresses and hard bounces stay failed.",
                           (SendState.SENDING, SendState.PAUSED, SendState.FINISHED), _retry_failed),
}


def actions_for(state: str, failed: int = 0) -> list[str]:
    return [name for name, action in ACTIONS.items()
            if state in action.from_states and (name != "retry-failed" or failed)]


@blueprint.get("/sends/<int:send_id>/<action_name>")
def confirm_action(send_id: int, action_name: str):
    action = ACTIONS.get(action_name)
    if action is None:
        return message_page("No such action", "Go back to the dashboard.", status=404)
    with database() as db:
        try:
            send = send_record.get_send(db, send_id)
        except NoSuchThing as exc:
            return message_page("No such send", str(exc), status=404)
        return ops_page("ops/confirm.html", send=send, action=action, action_name=action_name)


@blueprint.post("/sends/<int:send_id>/<action_name>")
def run_action(send_id: int, action_name: str):
    action = ACTIONS.get(action_name)
    if action is None:
        return message_page("No such action", "Nothing was changed.", status=404)
    if security.csrf_problem():
        return message_page("Nothing was changed", "The form had expired.",
                            "Go back to the dashboard and press the button again.", status=400)
    operator = g.operator
    try:
        with database() as db:
            done = action.run(db, send_id, operator)
            audit.record(db, operator.email, action_name, f"send {send_id} (dashboard)", client=auth.client_address())
    except NoSuchThing as exc:
        return message_page("No such send", str(exc), status=404)
    except InputError as exc:
        return message_page(f"Send {send_id} was not changed", *(str(p) for p in exc.problems), status=409)
    log.info("operator %s: %s send %s from the dashboard", operator.email, action_name, send_id)
    flash(done)
    return redirect(url_for("ops.dashboard"), code=303)


# --- charts: send rate and errors over the last hours, from the ledger and batch_runs ---------------


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str


@dataclass(frozen=True)
class Chart:
    title: str
    unit: str
    headline: str  # "1,234 in all", "3 waiting now"
    peak: int
    bars: list[Bar]
    start_label: str
    end_label: str


CHART_WIDTH, CHART_HEIGHT = 600, 120


def build_charts(db: Session, status: Status, now: datetime) -> list[Chart]:
    # Buckets on the clock's ten minutes, the last one holding now.
    step = int(CHART_BUCKET.total_seconds())
    end = datetime.fromtimestamp((int(now.timestamp()) // step + 1) * step, now.tzinfo)
    since = end - timedelta(hours=CHART_HOURS)
    buckets = int(timedelta(hours=CHART_HOURS) / CHART_BUCKET)
    sent = bucket_sums(db, Delivery.sent_at, func.count(), since, buckets, Delivery.state == DeliveryState.SENT)
    errors = bucket_sums(db, BatchRun.finished_at, func.sum(BatchRun.failed + BatchRun.retry), since, buckets)
    minutes = int(CHART_BUCKET.total_seconds() // 60)
    return [
        chart("Messages sent", f"sent per {minutes} minutes", sent, since),
        chart("Errors", f"failed or to be retried per {minutes} minutes", errors, since),
        queue_chart(db, status, since, buckets),
    ]


def bucket_sums(db: Session, column, value, since: datetime, buckets: int, *where) -> list[int]:
    """``value`` summed per CHART_BUCKET from ``since``, grouped by the database."""
    index = _bucket_index(db, column, since)
    query = select(index, value).where(column >= since, *where).group_by(index)
    sums = [0] * buckets
    for i, total in db.execute(query).all():
        if i is not None and 0 <= int(i) < buckets:
            sums[int(i)] += int(total or 0)
    return sums


def _bucket_index(db: Session, column, since: datetime):
    seconds = int(CHART_BUCKET.total_seconds())
    start = int(since.timestamp())
    if db.get_bind().dialect.name == "postgresql":
        epoch = func.extract("epoch", column)
    else:  # SQLite keeps UTC text, which strftime reads as UTC
        epoch = cast(func.strftime("%s", column), Integer)
    return cast(func.floor((epoch - start) / seconds), Integer)


def chart(title: str, unit: str, values: list[int], since: datetime, headline: str = "") -> Chart:
    peak = max(values) if values else 0
    width = CHART_WIDTH / max(1, len(values))
    bars = []
    for i, value in enumerate(values):
        height = CHART_HEIGHT * value / peak if peak else 0
        start = since + CHART_BUCKET * i
        bars.append(Bar(i * width, CHART_HEIGHT - height, max(width - 1, 1), height,
                        f"{start:%H:%M}-{start + CHART_BUCKET:%H:%M} UTC: {value}"))
    end = since + CHART_BUCKET * len(values)
    headline = headline or f"{sum(values):,} in all"
    return Chart(title, unit, headline, peak, bars, f"{since:%H:%M} UTC", f"{end:%H:%M} UTC")


def queue_chart(db: Session, status: Status, since: datetime, buckets: int) -> Chart:
    """The most messages waiting at once in each bucket, from the beat's samples."""
    depths = bucket_sums(db, QueueSample.at, func.max(QueueSample.depth), since, buckets)
    now = sum(q.depth for q in status.queues)
    return chart("Queue depth", "most messages waiting at once", depths, since, headline=f"{now:,} waiting now")


# --- pages ------------------------------------------------------------------------------


def ops_page(template: str, http_status: int = 200, **context):
    """A page in the console's shell, which links back here for operators."""
    context = {"may_operate": True, "publication": None, "colours": asdict(Colours())} | context
    html = render_template(template, operator=g.get("operator"), notices=get_flashed_messages(with_categories=True),
                           **context)
    return html, http_status


def message_page(title: str, *paragraphs: str, status: int = 200, may_operate: bool = True):
    return ops_page("console/message.html", status, title=title, paragraphs=paragraphs,
                    back=url_for("ops.dashboard") if may_operate else "", may_operate=may_operate)


def utc_time(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment else "-"


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m {seconds % 60:02d}s"


blueprint.add_app_template_filter(utc_time, "ops_time")
blueprint.add_app_template_filter(age, "ops_age")
