"""Inventory pages (HTML) and its API routes."""

from django.urls import path

from inventory.views import owner
from inventory.views import sync as sync_views

app_name = "inventory"
urlpatterns: list = [
    path("inventory/mine/", owner.mine, name="mine"),
    path("inventory/mine/bulk/", owner.bulk_action, name="bulk"),
    path("inventory/mine/<str:registration_id>/rotate-key/", owner.rotate_key, name="rotate-key"),
    path("inventory/mine/<str:registration_id>/transfer/", owner.transfer, name="transfer"),
    path("inventory/mine/<str:registration_id>/<slug:action>/", owner.client_action, name="client-action"),
    path("inventory/transfers/", owner.transfers, name="transfers"),
    path("inventory/transfers/<int:pk>/<slug:decision>/", owner.transfer_decide, name="transfer-decide"),
    path("inventory/orphans/", owner.orphans, name="orphans"),
    path("inventory/orphans/<str:registration_id>/take-over/", owner.take_over, name="take-over"),
    path("inventory/break-glass/", owner.break_glass, name="break-glass"),
]
urlpatterns += [
    path("inventory/sync-failures/", sync_views.SyncFailuresView.as_view(), name="sync_failures"),
    path("inventory/sync-failures/<int:pk>/retry/", sync_views.OutboxRetryView.as_view(), name="outbox_retry"),
]
