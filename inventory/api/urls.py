"""Inventory API routes, mounted at /api/v1/ by portal/urls.py: clients (read, and every action the pages
offer), containment and break glass, transfer and sponsorship inboxes, sync failures, usage, reports."""

from django.urls import path, re_path
from rest_framework.routers import SimpleRouter

from inventory.api import actions, config, idp, inbox, views
from inventory.api.lifecycle_policy import LifecyclePolicyPreviewView, LifecyclePolicyView
from inventory.api.usage import UsageIngestView

router = SimpleRouter(trailing_slash=True)
router.register("clients", views.ClientViewSet, basename="client")
router.register("scopes", config.ScopeViewSet, basename="scope")
router.register("teams", config.TeamViewSet, basename="team")

REG = r"(?P<registration_id>reg_[\w-]+)"
CLIENT_ACTIONS = {
    "renew": actions.ClientRenewView,
    "retire": actions.ClientRetireView,
    "suspend": actions.ClientSuspendView,
    "resume": actions.ClientResumeView,
    "rotate-key": actions.ClientRotateKeyView,
    "transfer": actions.ClientTransferView,
    "take-over": actions.ClientTakeOverView,
    "sponsors": actions.ClientSponsorInviteView,
    "hold": actions.ClientHoldView,
    "lift-hold": actions.ClientLiftHoldView,
    "revoke-spawn": actions.ClientRevokeSpawnView,
    "restore-spawn": actions.ClientRestoreSpawnView,
}

app_name = "inventory-api"
urlpatterns = [
    path("usage/", UsageIngestView.as_view(), name="usage"),
    path("reports/sprawl", views.SprawlReportView.as_view(), name="report-sprawl"),
    path("reports/frameworks", views.FrameworkReportView.as_view(), name="report-frameworks"),
    *[
        re_path(rf"^clients/{REG}/{name}/$", view.as_view(), name=f"client-{name}")
        for name, view in CLIENT_ACTIONS.items()
    ],
    path("break-glass/preview/", actions.BreakGlassPreviewView.as_view(), name="break-glass-preview"),
    path("break-glass/", actions.BreakGlassView.as_view(), name="break-glass"),
    path("transfers/", inbox.TransferListView.as_view(), name="transfers"),
    path("transfers/<int:pk>/accept/", inbox.TransferAcceptView.as_view(), name="transfer-accept"),
    path("transfers/<int:pk>/decline/", inbox.TransferDeclineView.as_view(), name="transfer-decline"),
    path("sponsorships/", inbox.SponsorshipListView.as_view(), name="sponsorships"),
    path("sponsorships/<int:pk>/accept/", inbox.SponsorshipAcceptView.as_view(), name="sponsorship-accept"),
    path("sponsorships/<int:pk>/decline/", inbox.SponsorshipDeclineView.as_view(), name="sponsorship-decline"),
    path("sponsorships/<int:pk>/remove/", inbox.SponsorshipRemoveView.as_view(), name="sponsorship-remove"),
    path("idp-connections/", idp.IdPConnectionListView.as_view(), name="idp-connections"),
    path("idp-connections/<int:pk>/secrets/", idp.IdPSecretsView.as_view(), name="idp-secrets"),
    path("idp-connections/<int:pk>/test/", idp.IdPConnectionTestView.as_view(), name="idp-test"),
    path("lifecycle-policy/", LifecyclePolicyView.as_view(), name="lifecycle-policy"),
    path("lifecycle-policy/preview/", LifecyclePolicyPreviewView.as_view(), name="lifecycle-policy-preview"),
    path("sync-failures/", inbox.SyncFailureListView.as_view(), name="sync-failures"),
    path("sync-failures/<int:pk>/retry/", inbox.SyncFailureRetryView.as_view(), name="sync-failure-retry"),
    path("sync-failures/<int:pk>/resolve/", inbox.SyncFailureResolveView.as_view(), name="sync-failure-resolve"),
    *router.urls,
]
