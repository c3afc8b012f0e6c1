"""Inventory pages (HTML) and its API routes."""

from django.urls import path, re_path

from inventory.views import attest, campaign, containment, lifecycle_policy, owner, security, sponsors, teams
from inventory.views import sync as sync_views

app_name = "inventory"
urlpatterns: list = [
    path("inventory/mine/", owner.mine, name="mine"),
    path("inventory/mine/bulk/", owner.bulk_action, name="bulk"),
    path("inventory/mine/attest/", attest.attest, name="attest"),
    path("inventory/mine/<str:registration_id>/rotate-key/", owner.rotate_key, name="rotate-key"),
    path("inventory/mine/<str:registration_id>/transfer/", owner.transfer, name="transfer"),
    path("inventory/mine/<str:registration_id>/sponsors/", sponsors.invite, name="sponsor-invite"),
    path("inventory/mine/<str:registration_id>/<slug:action>/", owner.client_action, name="client-action"),
    path("inventory/sponsorships/", sponsors.sponsorships, name="sponsorships"),
    path("inventory/sponsorships/<int:pk>/<slug:decision>/", sponsors.decide, name="sponsorship-decide"),
    path("inventory/transfers/", owner.transfers, name="transfers"),
    path("inventory/transfers/<int:pk>/<slug:decision>/", owner.transfer_decide, name="transfer-decide"),
    path("inventory/orphans/", owner.orphans, name="orphans"),
    path("inventory/orphans/<str:registration_id>/take-over/", owner.take_over, name="take-over"),
    path("inventory/break-glass/", owner.break_glass, name="break-glass"),
]
urlpatterns += [
    path("inventory/sync-failures/", sync_views.SyncFailuresView.as_view(), name="sync_failures"),
    path("inventory/sync-failures/<int:pk>/retry/", sync_views.OutboxRetryView.as_view(), name="outbox_retry"),
    path("inventory/sync-failures/<int:pk>/resolve/", sync_views.OutboxResolveView.as_view(), name="outbox_resolve"),
]
urlpatterns += [  # security: inventory, explain, exports, dashboard, framework report
    path("inventory/", security.inventory_list, name="list"),
    path("inventory/team-options/", teams.team_picker_options, name="team-options"),
    re_path(r"^inventory/export\.(?P<fmt>csv|json)$", security.inventory_export, name="export"),
    re_path(r"^inventory/(?P<registration_id>reg_[\w-]+)/$", security.client_explain_page, name="explain"),
    re_path(r"^inventory/(?P<registration_id>reg_[\w-]+)/evidence\.json$", security.client_evidence, name="evidence"),
    re_path(
        r"^inventory/(?P<registration_id>reg_[\w-]+)/(?P<action>hold|lift-hold|revoke-spawn|restore-spawn)/$",
        containment.containment_action,
        name="containment",
    ),
    path("inventory/lifecycle-policy/", lifecycle_policy.lifecycle_policy, name="lifecycle-policy"),
    path("dashboards/", security.dashboard, name="dashboard"),
    path("dashboards/<slug:chart>.csv", security.dashboard_csv, name="dashboard-csv"),
    path("dashboards/teams/", teams.team_list, name="team-dashboards"),
    path("dashboards/teams/<slug:slug>/", teams.team_dashboard, name="team-dashboard"),
    path("dashboards/teams/<slug:slug>/<slug:chart>.csv", teams.team_dashboard_csv, name="team-dashboard-csv"),
    path("reports/frameworks/teams/<slug:slug>/", teams.team_frameworks_report, name="team-frameworks"),
    path("reports/attestation/", campaign.attestation_report, name="attestation-report"),
    path("reports/frameworks/", security.frameworks_report, name="frameworks"),
    path("reports/frameworks.csv", security.frameworks_csv, name="frameworks-csv"),
]
