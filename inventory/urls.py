"""Inventory pages (HTML) and its API routes."""

from django.urls import path  # noqa: F401

app_name = "inventory"
urlpatterns: list = []
