"""URL map (see DESIGN.md "Pages and endpoints"). Each app owns its own urls modules."""

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from portal import views
from portal.api.views import api_not_found
from portal.tlog import views as log_views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics, name="metrics"),
    path("log/checkpoint", log_views.checkpoint, name="log-checkpoint"),
    re_path(r"^log/tile/(?P<path>.+)$", log_views.tile, name="log-tile"),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves its start-up script as a file: the page needs no inline script (CSP script-src 'self').
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/v1/", include("approvals.api.urls")),
    path("", include("approvals.urls")),
    path("", include("inventory.urls")),
    path("api/v1/", include("inventory.api.urls")),
    path("api/v1/", include("portal.api.urls")),
    path("scim/v2/", include("inventory.scim")),
    re_path(r"^api/", api_not_found),  # last: only what no route above took
]

handler403 = "portal.views.permission_denied"
