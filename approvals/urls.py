"""Approvals pages (HTML), the RFC 7591/7592 endpoints and the requests API."""

from django.urls import path  # noqa: F401

app_name = "approvals"
urlpatterns: list = []
