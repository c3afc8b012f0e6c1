"""/api/v1/requests/ and /api/v1/registrations/ routes (included from portal/urls.py under api/v1/)."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from approvals.api.registrations import RegistrationsView
from approvals.api.views import RegistrationRequestViewSet

router = SimpleRouter()
router.register("requests", RegistrationRequestViewSet, basename="request")

app_name = "approvals-api"
urlpatterns = [
    path("registrations/", RegistrationsView.as_view(), name="registrations"),
    *router.urls,
]
