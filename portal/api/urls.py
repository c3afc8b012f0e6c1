"""/api/v1/ routes of the kernel (included from portal/urls.py): people and their roles."""

from rest_framework.routers import SimpleRouter

from portal.api.people import PersonViewSet

router = SimpleRouter()
router.register("people", PersonViewSet, basename="person")

app_name = "portal-api"
urlpatterns = router.urls
