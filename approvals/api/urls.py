"""/api/v1/ routes of approvals (included from portal/urls.py): the review queue's requests, pre-registration,
an owner's own requests and initial access tokens, and the approval policy's versions."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from approvals.api.owner import MyRequestViewSet, TokenViewSet
from approvals.api.policy import PolicyViewSet
from approvals.api.registrations import RegistrationsView
from approvals.api.trust import TrustedCimdDomainViewSet, TrustedIssuerViewSet
from approvals.api.views import RegistrationRequestViewSet

router = SimpleRouter()
router.register("requests", RegistrationRequestViewSet, basename="request")
router.register("my-requests", MyRequestViewSet, basename="my-request")
router.register("tokens", TokenViewSet, basename="token")
router.register("policy", PolicyViewSet, basename="policy")
router.register("trusted-issuers", TrustedIssuerViewSet, basename="trusted-issuer")
router.register("trusted-cimd-domains", TrustedCimdDomainViewSet, basename="trusted-cimd-domain")

app_name = "approvals-api"
urlpatterns = [
    path("registrations/", RegistrationsView.as_view(), name="registrations"),
    *router.urls,
]
