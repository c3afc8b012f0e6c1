"""Leaver signals: a person stops being able to own clients.

Three sources call the one service :func:`user_deactivate`: an admin (Django admin action), the
company directory (SCIM ``active: false`` / DELETE, ``inventory.scim``) and OIDC SSO reporting the
account disabled (allauth signal receivers below). The service flips ``is_active``, records when and
by whom, audits it and, after commit, asks a worker to run the orphan sweep now instead of waiting for
the hourly beat. The orphan sweep keys on ``owner.is_active`` alone, so even a deactivation that
bypasses this service (e.g. unticking "active" in the admin form) is picked up on the next run.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from portal.audit import Actor, audit_record
from portal.logs import log_event

logger = logging.getLogger(__name__)

# Claims an IdP may use to say an account is disabled (Keycloak "enabled", Entra "accountEnabled",
# RFC 7662-style "active").
DISABLED_CLAIMS = ("active", "enabled", "accountEnabled", "account_enabled")


#: The fields :func:`user_deactivate` and :func:`user_reactivate` change.
ACTIVITY_FIELDS = ("is_active", "deactivated_at", "deactivation_source")


def _user_snapshot(user) -> dict:
    return {name: getattr(user, name) for name in ACTIVITY_FIELDS}


def _enqueue_orphan_sweep() -> None:
    try:
        from portal.celery import app

        app.send_task("inventory.tasks.sweep_orphans")
    except Exception:  # broker down: the hourly beat run picks the leaver up
        logger.warning("event=orphan_sweep_enqueue_failed")


@transaction.atomic
def user_deactivate(*, user, actor: Actor, source: str, reason: str = "", now: dt.datetime | None = None) -> bool:
    """Deactivate a person (idempotent). Returns False when they already were inactive.

    The caller's ``user`` is left as it was: reload it (:data:`ACTIVITY_FIELDS`) to go on using it."""
    locked = get_user_model().objects.select_for_update().get(pk=user.pk)
    if not locked.is_active and locked.deactivated_at is not None:
        return False
    before = _user_snapshot(locked)
    locked.is_active = False
    locked.deactivated_at = locked.deactivated_at or now or timezone.now()
    locked.deactivation_source = source[:32]
    locked.save(update_fields=list(ACTIVITY_FIELDS))
    audit_record(
        actor=actor,
        action="user.deactivate",
        object_type="user",
        object_id=locked.pk,
        before=before,
        after=_user_snapshot(locked),
        reason=reason or f"deactivated via {source}",
    )
    transaction.on_commit(_enqueue_orphan_sweep)
    log_event(logger, "user_deactivated", user_id=locked.pk, source=source)
    return True


@transaction.atomic
def user_reactivate(*, user, actor: Actor, source: str, reason: str = "") -> bool:
    """Reactivate a person (e.g. SCIM ``active: true``). Their orphaned clients stay orphaned until
    they (or their team) take them back: a returning owner re-confirms rather than silently resuming. Returns False
    when they already were active; the caller's ``user`` is left as it was."""
    locked = get_user_model().objects.select_for_update().get(pk=user.pk)
    if locked.is_active:
        return False
    before = _user_snapshot(locked)
    locked.is_active, locked.deactivated_at, locked.deactivation_source = True, None, ""
    locked.save(update_fields=list(ACTIVITY_FIELDS))
    audit_record(
        actor=actor,
        action="user.reactivate",
        object_type="user",
        object_id=locked.pk,
        before=before,
        after=_user_snapshot(locked),
        reason=reason or f"reactivated via {source}",
    )
    return True


def sso_account_disabled(extra_data: dict | None) -> bool:
    data = extra_data or {}
    userinfo, id_token = data.get("userinfo"), data.get("id_token")
    for source in (
        data,
        userinfo if isinstance(userinfo, dict) else {},
        id_token if isinstance(id_token, dict) else {},
    ):
        for claim in DISABLED_CLAIMS:
            if source.get(claim) is False or str(source.get(claim)).lower() == "false":
                return True
    return False


def on_social_login(sender, request=None, sociallogin=None, **kwargs) -> None:
    """allauth ``pre_social_login`` / ``social_account_updated``: the SSO provider says the account is off."""
    account = getattr(sociallogin, "account", None)
    # A first login linked by e-mail has its person on the login, not yet on the (unsaved) account.
    user = (getattr(account, "user", None) if account is not None else None) or getattr(sociallogin, "user", None)
    if (
        account is None
        or user is None
        or user.pk is None
        or not sso_account_disabled(getattr(account, "extra_data", None))
    ):
        return
    user_deactivate(
        user=user,
        actor=Actor.system(f"sso:{account.provider}"),
        source="sso",
        reason="the SSO provider reports the account disabled",
    )
    user.refresh_from_db(fields=ACTIVITY_FIELDS)  # allauth goes on with this object: it must refuse the login


def connect_signals() -> None:
    from allauth.socialaccount.signals import pre_social_login, social_account_updated

    pre_social_login.connect(on_social_login, dispatch_uid="inventory.leavers.pre_social_login")
    social_account_updated.connect(on_social_login, dispatch_uid="inventory.leavers.social_account_updated")
