"""Approvals pages (HTML), the RFC 7591/7592 endpoints and the requests API."""

from django.urls import path

from approvals import preregistration_views, tokens_views, views
from approvals.oauth2.urls import urlpatterns as oauth2_urlpatterns

app_name = "approvals"
urlpatterns: list = [
    *oauth2_urlpatterns,
    # Pre-registration: an inventory path, served here because inventory may not import approvals.
    path("inventory/new/", preregistration_views.preregister_page, name="preregister"),
    path("tokens/", tokens_views.token_list, name="token-list"),
    path("tokens/<int:pk>/", tokens_views.token_detail, name="token-detail"),
    path("tokens/<int:pk>/revoke", tokens_views.token_revoke_view, name="token-revoke"),
    path("dashboards/dcr-debt/", views.DcrDebtView.as_view(), name="dcr-debt"),
    path(
        "dashboards/dcr-debt/<str:software_identity>/retire-duplicates",
        views.DcrDebtRetireView.as_view(),
        name="dcr-debt-retire",
    ),
    path("approvals/", views.QueueView.as_view(), name="queue"),
    path("approvals/mine/", views.MyRequestsView.as_view(), name="mine"),
    path("approvals/mine/<str:public_id>/withdraw/", views.WithdrawView.as_view(), name="withdraw"),
    path("approvals/<str:public_id>/", views.DetailView.as_view(), name="detail"),
    path("approvals/<str:public_id>/decide/", views.DecideView.as_view(), name="decide"),
]
