"""Inventory pages (HTML) and its API routes."""

from django.urls import path  # noqa: F401

from inventory.views import sync as sync_views

app_name = "inventory"
urlpatterns: list = []
urlpatterns += [
    path("inventory/sync-failures/", sync_views.SyncFailuresView.as_view(), name="sync_failures"),
    path("inventory/sync-failures/<int:pk>/retry/", sync_views.OutboxRetryView.as_view(), name="outbox_retry"),
]
