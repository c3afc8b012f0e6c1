"""Single sign-on (OpenID Connect through allauth): who may sign in, and roles from the IdP's groups claim.

* **No accounts on the fly.** People are provisioned by admins or the directory (SCIM); an SSO login for
  nobody Registrar knows is refused (``RegistrarSocialAccountAdapter.is_open_for_signup``).
* **First login links by verified e-mail.** An SSO account is linked to the existing person whose e-mail
  address the IdP reports *verified* (``email_verified``); an unverified address links nothing
  (``SOCIALACCOUNT_EMAIL_AUTHENTICATION`` + ``…_AUTO_CONNECT``). Later logins find the link by the IdP's
  subject.
* **Roles from groups.** With ``REGISTRAR_SSO_GROUP_ROLES`` set (``idp-group=role,…``), every SSO login sets
  the person's roles that the mapping names to those their groups (claim ``REGISTRAR_SSO_GROUPS_CLAIM``) map
  to: granted when the group appears, taken away when it is gone. Roles the mapping never names stay as the
  admin set them. Each change is one ``user.roles_sync`` audit event.
* **Disabled at the IdP.** An IdP that reports the account disabled (``active``/``enabled``/``accountEnabled``
  false) gets the person deactivated as a leaver (``inventory.leavers``) and the login refused.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import transaction

from portal.audit import Actor, audit_record
from portal.logs import log_event
from portal.roles import Role

logger = logging.getLogger(__name__)


def sso_claims(extra_data: Mapping | None) -> dict:
    """The claims allauth stored for an OIDC login: the ID token's, overlaid by the userinfo answer's."""
    data = extra_data or {}
    claims: dict = {}
    for part in ("id_token", "userinfo"):
        if isinstance(data.get(part), Mapping):
            claims.update(data[part])
    return claims or dict(data)


def groups_from(claims: Mapping) -> list[str]:
    """The groups claim as a list of names (a list, or one space- or comma-separated string)."""
    value = claims.get(settings.REGISTRAR_SSO_GROUPS_CLAIM)
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, list | tuple):
        return []
    # Keycloak's group mapper can send full paths ("/registrar/approvers"): both forms match.
    names: list[str] = []
    for item in value:
        if isinstance(item, str) and item:
            names.append(item)
            if "/" in item:
                names.append(item.rstrip("/").rsplit("/", 1)[-1])
    return names


def roles_for_groups(groups: Iterable[str]) -> set[str]:
    mapping: Mapping[str, list[str]] = settings.REGISTRAR_SSO_GROUP_ROLES
    return {role for group in groups for role in mapping.get(group, ())}


def managed_roles() -> set[str]:
    """The roles SSO decides: every role the mapping names."""
    return {role for roles in settings.REGISTRAR_SSO_GROUP_ROLES.values() for role in roles}


@transaction.atomic
def sso_roles_sync(*, user, groups: Iterable[str], provider: str) -> bool:
    """Make the user's SSO-managed roles those their groups map to; one audit event when anything changes."""
    managed = managed_roles()
    if not managed:
        return False
    unknown = managed - {r.value for r in Role}
    if unknown:  # settings validate the names; this guards a test or a shell that sets them by hand
        raise ValueError(f"REGISTRAR_SSO_GROUP_ROLES names unknown roles: {sorted(unknown)}")
    user = type(user).objects.select_for_update().get(pk=user.pk)
    current = set(user.groups.filter(name__in=[r.value for r in Role]).values_list("name", flat=True))
    wanted = (current - managed) | roles_for_groups(groups)
    if wanted == current:
        return False
    grant, revoke = wanted - current, current - wanted
    if grant:
        user.groups.add(*Group.objects.filter(name__in=grant))
    if revoke:
        user.groups.remove(*Group.objects.filter(name__in=revoke))
    audit_record(
        actor=Actor.system(f"sso:{provider}"),
        action="user.roles_sync",
        object_type="user",
        object_id=user.pk,
        before={"roles": sorted(current)},
        after={"roles": sorted(wanted)},
        reason=f"roles from the SSO groups claim: granted {sorted(grant) or 'none'}, removed {sorted(revoke) or 'none'}",
    )
    log_event(logger, "sso_roles_sync", user_id=user.pk, granted=sorted(grant), removed=sorted(revoke))
    return True


def on_user_logged_in(sender, request=None, user=None, sociallogin=None, **kwargs) -> None:
    """allauth ``user_logged_in``: after an SSO login, take the roles from the groups claim."""
    if sociallogin is None or user is None or not settings.REGISTRAR_SSO_GROUP_ROLES:
        return
    claims = sso_claims(getattr(sociallogin.account, "extra_data", None))
    if sso_roles_sync(user=user, groups=groups_from(claims), provider=sociallogin.account.provider):
        user.__dict__.pop("_registrar_roles", None)  # portal.roles caches roles on the user for the request


def connect_signals() -> None:
    from allauth.account.signals import user_logged_in

    user_logged_in.connect(on_user_logged_in, dispatch_uid="portal.sso.user_logged_in")
