"""Security API routes, mounted at /api/v1/ by portal/urls.py."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from inventory.api import views
from inventory.api.usage import UsageIngestView

router = SimpleRouter(trailing_slash=True)
router.register("clients", views.ClientViewSet, basename="client")

app_name = "inventory-api"
urlpatterns = [
    path("usage/", UsageIngestView.as_view(), name="usage"),
    path("reports/sprawl", views.SprawlReportView.as_view(), name="report-sprawl"),
    path("reports/frameworks", views.FrameworkReportView.as_view(), name="report-frameworks"),
    *router.urls,
]
