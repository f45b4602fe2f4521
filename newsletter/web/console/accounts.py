"""Invitations and password resets, your account, and the admins' accounts page (the login is ``newsletter.web.auth``)."""

from __future__ import annotations

from flask import abort, current_app, g, request, url_for
from sqlalchemy import select

from newsletter.accounts import admins, audit
from newsletter.accounts import invitations
from newsletter.console.workflow import SELF_APPROVAL
from newsletter.errors import InputError
from newsletter.store.models import ROLES, Admin, PublicationRow
from newsletter.audience.tokens import BadToken
from newsletter.web import auth
from newsletter.web.console import blueprint, done, message, page, problem_text
from newsletter.web.pages import database, settings
from newsletter.web import security


# --- invitations and resets -----------------------------------------------------------------------


@blueprint.get("/welcome/<token>")
def welcome_form(token: str):
    with database() as db:
        try:
            admin, purpose = invitations.account_for_link(db, settings(), token)
        except BadToken as exc:
            return message("This link does not work", f"{str(exc).capitalize()}.",
                           "Ask an admin for a new invitation, or ask for a new password from the login page.", status=410)
        return page("console/welcome.html", email=admin.email, purpose=purpose, token=token, problem="")


@blueprint.post("/welcome/<token>")
def welcome(token: str):
    if security.csrf_problem():
        return message("Nothing was changed", "The form had expired.", "Open the link from the email again.", status=400)
    with database() as db:
        try:
            admin = invitations.use_link(db, settings(), token, request.form.get("password", ""),
                                         request.form.get("again", ""))
            audit.record(db, admin.email, "set a password", "from an emailed link", client=auth.client_address())
        except BadToken as exc:
            return message("This link does not work", f"{str(exc).capitalize()}.", status=410)
        except InputError as exc:
            db.rollback()
            admin, purpose = invitations.account_for_link(db, settings(), token)
            return page("console/welcome.html", 400, email=admin.email, purpose=purpose, token=token,
                        problem=" ".join(problem_text(exc)))
    return done("Your password is set. Log in with it now.", url_for("auth.login_form"))


@blueprint.get("/forgot")
def forgot_form():
    return page("console/forgot.html")


@blueprint.post("/forgot")
def forgot():
    if security.csrf_problem():
        return message("Nothing was sent", "The form had expired.", "Go back and try again.", status=400)
    email = admins.login_name(request.form.get("email", ""))
    limit = current_app.extensions["newsletter.login_limit"]
    if limit.allow(auth.client_address(), email):
        with database() as db:
            admin = db.scalars(select(Admin).where(Admin.email == email, Admin.disabled_at.is_(None))).one_or_none()
            publication = _a_publication_of(db, admin) if admin is not None else None
            if admin is not None and publication is not None:
                invitations.send_reset(db, settings(), admin, publication)
                audit.record(db, email, "asked for a new password", client=auth.client_address())
    # The same answer whether or not the account exists.
    return message("Check your email", "If an account has that address, a link to choose a new password is on its way. "
                   "It works once, for an hour.", back=url_for("auth.login_form"))


def _a_publication_of(db, admin: Admin) -> PublicationRow | None:
    """The publication whose address an account's emails come from."""
    held = admins.roles_of(db, admin.id)
    query = select(PublicationRow).order_by(PublicationRow.id)
    if held:
        query = query.where(PublicationRow.id.in_(held))
    return db.scalars(query.limit(1)).first()


# --- your account -----------------------------------------------------------------------------------


@blueprint.get("/account")
def account_form():
    return page("console/account.html", problem="")


@blueprint.post("/account")
def change_password():
    new, again = request.form.get("new", ""), request.form.get("again", "")
    try:
        if new != again:
            raise InputError("the two new passwords are not the same", "new password", "type the same password twice")
        with database() as db:
            admins.change_password(db, g.operator.id, request.form.get("current", ""), new)
            audit.record(db, g.operator.email, "changed their password", client=auth.client_address())
    except InputError as exc:
        return page("console/account.html", 400, problem=" ".join(problem_text(exc)))
    # Every session of the account ended, this one too: log in with the new password.
    auth.log_out()
    return done("Your password is changed, and every session of your account has ended. Log in again.",
                url_for("auth.login_form"))


# --- accounts (admins) ----------------------------------------------------------------------------


def _require_admin():
    if not g.operator.is_admin:
        abort(403, "Accounts are managed by admins.")


@blueprint.get("/accounts")
def accounts():
    _require_admin()
    with database() as db:
        return page("console/accounts.html", accounts=admins.account_views(db), roles=ROLES,
                    publications=list(db.scalars(select(PublicationRow).order_by(PublicationRow.name))),
                    self_approval=SELF_APPROVAL, entries=audit.recent(db, 30))


@blueprint.post("/accounts")
def invite():
    _require_admin()
    roles = request.form.getlist("roles")
    try:
        with database() as db:
            publication = db.get(PublicationRow, int(request.form.get("publication", "0") or 0))
            if publication is None:
                raise InputError("choose a publication", "publication", "pick one from the list")
            if not roles:
                raise InputError("choose at least one role", "roles", "tick editor, approver or operator")
            admin = admins.invite_account(db, request.form.get("email", ""), publication.id, roles)
            audit.record(db, g.operator.email, "gave roles", f"{admin.email}: {', '.join(roles)} in {publication.slug}",
                         client=auth.client_address(), publication_id=publication.id)
            failed = invitations.send_invitation(db, settings(), admin, publication, roles, g.operator.email) \
                if not admin.password_hash else []
            email = admin.email
    except InputError as exc:
        return message("Nobody was invited", *problem_text(exc), status=400, back=url_for("console.accounts"))
    if failed:
        return done(f"{email} has the roles, but the invitation could not be sent: {'; '.join(failed)}",
                    url_for("console.accounts"))
    return done(f"{email} has the roles {', '.join(roles)}." + (" An invitation is on its way." if not failed else ""),
                url_for("console.accounts"))


@blueprint.post("/accounts/<int:admin_id>/<action>")
def account_action(admin_id: int, action: str):
    _require_admin()
    if admin_id == g.operator.id and action == "revoke":
        return message("Not revoked", "You cannot revoke your own account.", back=url_for("console.accounts"), status=400)
    with database() as db:
        admin = db.get(Admin, admin_id)
        if admin is None:
            abort(404)
        if action == "revoke":
            admins.revoke_account(db, admin_id)
            text = f"{admin.email} can no longer log in; their open sessions have ended."
        elif action == "restore":
            admins.restore_account(db, admin_id)
            text = f"{admin.email} can log in again."
        elif action == "reset":
            publication = _a_publication_of(db, admin)
            failed = invitations.send_reset(db, settings(), admin, publication) if publication else ["no publication"]
            text = f"A link to choose a new password was sent to {admin.email}." if not failed else \
                f"The link could not be sent: {'; '.join(failed)}"
        else:
            abort(404)
        audit.record(db, g.operator.email, action, admin.email, client=auth.client_address())
    return done(text, url_for("console.accounts"))


@blueprint.post("/publications/<int:publication_id>/self-approval")
def self_approval(publication_id: int):
    _require_admin()
    allowed = request.form.get("allowed") == "yes"
    with database() as db:
        publication = db.get(PublicationRow, publication_id)
        if publication is None:
            abort(404)
        publication.settings = {**(publication.settings or {}), SELF_APPROVAL: allowed}
        audit.record(db, g.operator.email, "self-approval " + ("allowed" if allowed else "not allowed"),
                     publication.slug, client=auth.client_address(), publication_id=publication.id)
        name = publication.name
    return done(f"{name}: one person may {'now' if allowed else 'no longer'} edit and approve the same issue.",
                url_for("console.accounts"))
