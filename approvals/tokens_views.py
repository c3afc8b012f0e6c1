"""Owner pages for initial access tokens (``/tokens/``): mint, list, revoke, and what each token produced.

Thin views over ``approvals.services.token_mint`` / ``token_revoke``. A minted token is rendered once, in
the response to the POST that created it, and never stored in plaintext anywhere (not even the session):
reloading that page cannot show it again.
"""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib import messages
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from approvals.models import InitialAccessToken, RegistrationRequest
from approvals.services import TokenError, token_mint, token_revoke
from inventory.models import IdPConnection, ScopeDefinition, Team
from inventory.selectors.owners import default_team_of, teams_of
from portal.audit import Actor
from portal.paging import BoundedPaginator
from portal.roles import Role, role_required

PAGE_SIZE = 25


class TokenMintForm(forms.Form):
    purpose = forms.CharField(
        label="Purpose",
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="What the agent registering with this token is for. Every client it creates carries this.",
    )
    scopes = forms.MultipleChoiceField(
        label="Allowed scopes",
        widget=forms.CheckboxSelectMultiple,
        help_text="The most a registration with this token can ask for.",
    )
    max_ttl_hours = forms.IntegerField(label="Max client lifetime (hours)", min_value=1, max_value=24 * 365, initial=24)
    max_uses = forms.IntegerField(label="Max registrations", min_value=1, max_value=10000, initial=1)
    valid_days = forms.IntegerField(label="Token valid for (days)", min_value=1, max_value=365, initial=7)
    internal_only = forms.BooleanField(label="Internal-only clients", required=False, initial=True)
    team = forms.ModelChoiceField(
        label="Team",
        queryset=Team.objects.none(),
        required=False,
        empty_label="No team",
        help_text="The team every client registered with this token belongs to (dashboards and reports group by it).",
    )
    idp = forms.ModelChoiceField(
        label="Target IdP", queryset=IdPConnection.objects.none(), required=False, empty_label="Default IdP"
    )
    allowed_networks = forms.CharField(
        label="Allowed source networks",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "10.0.0.0/8\n2001:db8::/32", "spellcheck": "false"}),
        help_text="CIDR blocks, one per line: registrations with this token (and their later calls) are accepted "
        "only from these addresses. Empty: from anywhere.",
    )

    approval_window = forms.CharField(
        label="Working window for high-risk approvals",
        required=False,
        max_length=100,
        widget=forms.TextInput(attrs={"placeholder": "Mon-Fri 08:00-18:00 Europe/Berlin", "spellcheck": "false"}),
        help_text="People approve its high-risk requests only in this window (outside it, requests wait). "
        "Empty: the policy's or the global window.",
    )

    def __init__(self, *args, owner, **kwargs):
        super().__init__(*args, **kwargs)
        scopes, idp, team = self.fields["scopes"], self.fields["idp"], self.fields["team"]
        assert isinstance(scopes, forms.MultipleChoiceField) and isinstance(idp, forms.ModelChoiceField)
        assert isinstance(team, forms.ModelChoiceField)
        team.queryset = teams_of(owner)  # only the owner's teams: anything else is refused as an invalid choice
        if not self.is_bound:
            team.initial = default_team_of(owner)
        scopes.choices = [
            (s.name, f"{s.name} ({s.sensitivity})")
            for s in ScopeDefinition.objects.filter(is_active=True).only("name", "sensitivity")
        ]
        idp.queryset = IdPConnection.objects.filter(enabled=True)

    def clean_approval_window(self) -> str:
        from approvals.conditions import window_problem

        value = self.cleaned_data["approval_window"].strip()
        problem = window_problem(value)  # the one rule (approvals.conditions), as in the admin and the API
        if problem is not None:
            raise forms.ValidationError(problem)
        return value

    def clean_allowed_networks(self) -> list[str]:
        from approvals.conditions import networks_problem

        networks = [line.strip() for line in self.cleaned_data["allowed_networks"].splitlines() if line.strip()]
        problem = networks_problem(networks)  # the one rule (approvals.conditions), as in the admin and the command
        if problem is not None:
            raise forms.ValidationError(f"{problem} (one CIDR block per line, e.g. 10.0.0.0/8)")
        return networks


def token_state(token: InitialAccessToken, now) -> str:
    """One word for the list: revoked, expired, used up or active (in that order of precedence)."""
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at <= now:
        return "expired"
    if token.uses >= token.max_uses:
        return "used up"
    return "active"


def _token_list(request: HttpRequest, form: TokenMintForm, status: int = 200) -> HttpResponse:
    tokens = (
        InitialAccessToken.objects.filter(owner_id=request.user.pk)
        .select_related("team")
        .annotate(registrations=Count("requests"))
        .order_by("-created_at", "-pk")
    )
    page = BoundedPaginator(tokens, PAGE_SIZE).get_page(request.GET.get("page"))
    now = timezone.now()
    for token in page.object_list:
        token.state = token_state(token, now)
    return render(
        request,
        "approvals/tokens.html",
        {"page_obj": page, "tokens": page.object_list, "form": form, "now": timezone.now(), "nav_active": "tokens"},
        status=status,
    )


@role_required(Role.OWNER)
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _token_list(request, TokenMintForm(owner=request.user))
    form = TokenMintForm(request.POST, owner=request.user)
    if not form.is_valid():
        return _token_list(request, form, status=400)
    data = form.cleaned_data
    try:
        token, plaintext = token_mint(
            actor=Actor.user(request.user),
            owner=request.user,
            purpose=data["purpose"],
            scopes=data["scopes"],
            max_ttl_seconds=data["max_ttl_hours"] * 3600,
            max_uses=data["max_uses"],
            internal_only=data["internal_only"],
            valid_for=timedelta(days=data["valid_days"]),
            idp=data["idp"],
            team=data["team"],
            allowed_networks=data["allowed_networks"],
            approval_window=data["approval_window"],
        )
    except TokenError as exc:
        form.add_error(None, str(exc))
        return _token_list(request, form, status=400)
    messages.success(request, f"Token {token.prefix}… minted. Copy it now: it is shown only once.")
    return render(
        request, "approvals/tokens_minted.html", {"token": token, "plaintext": plaintext, "nav_active": "tokens"}
    )


@role_required(Role.OWNER)
def token_detail(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(InitialAccessToken.objects.select_related("idp"), pk=pk, owner=request.user)
    registrations = (
        RegistrationRequest.objects.filter(token=token).select_related("client").order_by("-created_at", "-pk")
    )
    page = BoundedPaginator(registrations, PAGE_SIZE).get_page(request.GET.get("page"))
    token.state = token_state(token, timezone.now())  # type: ignore[attr-defined]  # for the template
    return render(
        request,
        "approvals/tokens_detail.html",
        {
            "token": token,
            "page_obj": page,
            "registrations": page.object_list,
            "now": timezone.now(),
            "nav_active": "tokens",
        },
    )


@role_required(Role.OWNER)
@require_POST
def token_revoke_view(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(InitialAccessToken, pk=pk, owner=request.user)
    try:
        token_revoke(actor=Actor.user(request.user), token=token, reason=request.POST.get("reason", "")[:500])
    except TokenError as exc:
        messages.error(request, f"Token {token.prefix}…: {exc}")
    else:
        messages.success(request, f"Token {token.prefix}… revoked: it can no longer register clients.")
    return redirect("approvals:token-list")
