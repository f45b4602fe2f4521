"""Sign-up and confirmation pages: /subscribe/<publication>/<list>, /confirm/<token>.

Every accepted address gets the same "check your inbox" page, whether it was
new, waiting for confirmation or subscribed already: only the owner of the
mailbox learns more, from the link in it. Confirming takes a button press
(a POST): mail scanners that open every link must not subscribe anyone.
"""

from __future__ import annotations

from flask import Blueprint, current_app, request

from newsletter.audience import signup
from newsletter.errors import InputError
from newsletter.errors import NotFound as NoSuchThing
from newsletter.store.models import PublicationRow
from newsletter.audience.tokens import BadToken
from newsletter.web import security
from newsletter.web.pages import database, install, message, not_found, page, settings

blueprint = Blueprint("public", __name__)
blueprint.record_once(install)

HONEYPOT_FIELD = "website"  # hidden from people; bots fill in every field


# --- sign-up -------------------------------------------------------------------


@blueprint.get("/subscribe/<publication_slug>/<list_slug>")
def subscribe_form(publication_slug: str, list_slug: str):
    with database() as session:
        try:
            publication, mailing_list = signup.find_list(session, publication_slug, list_slug)
        except NoSuchThing:
            return not_found()
        # A website's sign-up snippet (console: the list's page) sends the address along.
        typed = {"email": request.args.get("email", "")[:320]}
        return page("signup.html", publication=publication, mailing_list=mailing_list, values=typed, problems={})


@blueprint.post("/subscribe/<publication_slug>/<list_slug>")
def subscribe(publication_slug: str, list_slug: str):
    form = request.form  # a malformed or oversized body stops here with 400 / 413
    values = {"email": form.get("email", ""), "name": form.get("name", "")}
    with database() as session:
        try:
            publication, mailing_list = signup.find_list(session, publication_slug, list_slug)
        except NoSuchThing:
            return not_found()

        def again(problems: dict, status: int):
            return page("signup.html", status, publication=publication, mailing_list=mailing_list,
                        values=values, problems=problems)

        if not current_app.extensions["newsletter.client_limit"].allow(request.remote_addr or "unknown"):
            return message("Too many sign-ups from your network",
                           "Please wait a few minutes and try again.", status=429, publication=publication)
        if security.csrf_problem():
            return again({"form": "This form has expired. Please send it again."}, 400)
        if form.get(HONEYPOT_FIELD):
            return _check_your_inbox(publication, mailing_list)  # a bot: say nothing, do nothing
        try:
            signup.request_subscription(session, settings(), publication_slug, list_slug,
                                        values["email"], values["name"])
        except InputError as exc:
            return again({p.where.removeprefix("field "): f"{p.message}. {p.fix.capitalize()}." for p in exc.problems}, 400)
        except signup.ConfirmationNotSent:
            return message("We could not send the email just now",
                           "Nothing went wrong on your side. Please try again in a few minutes.",
                           status=503, publication=publication)
        return _check_your_inbox(publication, mailing_list)


def _check_your_inbox(publication, mailing_list):
    minutes = max(1, settings().signup_email_window_seconds // 60)
    return message(
        "Check your inbox",
        f"We have sent an email to the address you gave. Open the link in it to start receiving "
        f"{mailing_list.name}.",
        f"If you do not see it, look in your spam folder. If you asked more than once, we send one "
        f"email every {minutes} minutes at most.",
        publication=publication,
    )


# --- confirmation -----------------------------------------------------------------


@blueprint.get("/confirm/<token>")
def confirm_page(token: str):
    with database() as session:
        try:
            _subscriber, mailing_list, _membership, _sent = signup.confirmation_target(session, settings(), token)
        except BadToken as exc:
            return _expired(session, token) if exc.expired else not_found()
        publication = _publication_of(session, mailing_list)
        return page("confirm.html", publication=publication, mailing_list=mailing_list, action=request.path)


@blueprint.post("/confirm/<token>")
def confirm(token: str):
    with database() as session:
        try:
            result = signup.confirm_subscription(session, settings(), token)
        except BadToken as exc:
            return _expired(session, token) if exc.expired else not_found()
        name, publication = result.mailing_list.name, result.publication
        if result.outcome == signup.LEFT_SINCE:
            return message("You left this list", f"You unsubscribed from {name} after this link was sent, so it "
                           "no longer works.", "To subscribe again, use the sign-up page.", publication=publication,
                           link=(f"/subscribe/{publication.slug}/{result.mailing_list.slug}", f"Sign up for {name}"))
        if result.outcome == signup.ALREADY_CONFIRMED:
            return message("You are already subscribed", f"You are on {name}; there is nothing more to do.",
                           publication=publication)
        return message("You are subscribed", f"Thank you: you will receive {name} from {publication.name}.",
                       "Every email has a link to change your choices or unsubscribe.", publication=publication)


@blueprint.post("/confirm/<token>/renew")
def renew(token: str):
    with database() as session:
        try:
            _subscriber, mailing_list = signup.confirmation_target(session, settings(), token, max_age=signup.ANY_AGE)[:2]
            signup.renew_confirmation(session, settings(), token)
        except BadToken:
            return not_found()
        except signup.ConfirmationNotSent:
            return message("We could not send the email just now", "Please try again in a few minutes.", status=503)
        return _check_your_inbox(_publication_of(session, mailing_list), mailing_list)


def _expired(session, token: str):
    try:
        mailing_list = signup.confirmation_target(session, settings(), token, max_age=signup.ANY_AGE)[1]
    except BadToken:
        return not_found()
    publication = _publication_of(session, mailing_list)
    return page("expired.html", 410, publication=publication, mailing_list=mailing_list,
                action=f"/confirm/{token}/renew")


def _publication_of(session, mailing_list) -> PublicationRow:
    return session.get(PublicationRow, mailing_list.publication_id)
