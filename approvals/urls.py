"""Approvals pages (HTML), the RFC 7591/7592 endpoints and the requests API."""

from django.urls import path

from approvals import tokens_views
from approvals.oauth2.urls import urlpatterns as oauth2_urlpatterns

app_name = "approvals"
urlpatterns: list = [
    *oauth2_urlpatterns,
    path("tokens/", tokens_views.token_list, name="token-list"),
    path("tokens/<int:pk>/", tokens_views.token_detail, name="token-detail"),
    path("tokens/<int:pk>/revoke", tokens_views.token_revoke_view, name="token-revoke"),
]
