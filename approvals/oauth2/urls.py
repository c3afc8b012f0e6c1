"""RFC 7591/7592 routes; included from approvals.urls (namespace ``approvals``)."""

from django.urls import path

from approvals.oauth2 import views

urlpatterns = [
    path("oauth2/register", views.register, name="oauth2-register"),
    path("oauth2/register/<str:registration_id>", views.manage, name="oauth2-manage"),
    # One IdP connection's registration endpoint (its metadata advertises it): picks that IdP's anonymous profile.
    path("oauth2/idp/<str:idp_name>/register", views.register, name="oauth2-register-idp"),
]
