"""Inventory pages (HTML) and its API routes."""

from django.urls import path, re_path

from inventory.views import security

app_name = "inventory"
urlpatterns: list = [
    path("inventory/", security.inventory_list, name="list"),
    re_path(r"^inventory/export\.(?P<fmt>csv|json)$", security.inventory_export, name="export"),
    re_path(r"^inventory/(?P<registration_id>reg_[\w-]+)/$", security.client_explain_page, name="explain"),
    re_path(r"^inventory/(?P<registration_id>reg_[\w-]+)/evidence\.json$", security.client_evidence, name="evidence"),
    path("dashboards/", security.dashboard, name="dashboard"),
    path("dashboards/<slug:chart>.csv", security.dashboard_csv, name="dashboard-csv"),
    path("reports/frameworks/", security.frameworks_report, name="frameworks"),
    path("reports/frameworks.csv", security.frameworks_csv, name="frameworks-csv"),
]
