"""/api/v1/requests/ routes (included from portal/urls.py under api/v1/)."""

from rest_framework.routers import SimpleRouter

from approvals.api.views import RegistrationRequestViewSet

router = SimpleRouter()
router.register("requests", RegistrationRequestViewSet, basename="request")

app_name = "approvals-api"
urlpatterns = router.urls
