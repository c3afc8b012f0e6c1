"""Approvals pages (HTML), the RFC 7591/7592 endpoints and the requests API."""

from django.urls import path

from approvals import views

app_name = "approvals"
urlpatterns: list = [
    path("approvals/", views.QueueView.as_view(), name="queue"),
    path("approvals/mine/", views.MyRequestsView.as_view(), name="mine"),
    path("approvals/mine/<str:public_id>/withdraw/", views.WithdrawView.as_view(), name="withdraw"),
    path("approvals/<str:public_id>/", views.DetailView.as_view(), name="detail"),
    path("approvals/<str:public_id>/decide/", views.DecideView.as_view(), name="decide"),
]
