"""The broker's operator REST API, under /api/txbroker/ (staff only)."""

from django.urls import path

from . import group_views, grpc_views, views

app_name = "txbroker-api"

urlpatterns = [
    path("messages/", views.MessageListView.as_view(), name="message-list"),
    path("messages/<str:msg_id>/", views.MessageDetailView.as_view(), name="message-detail"),
    path("messages/<str:msg_id>/replay/", views.ReplayView.as_view(), name="message-replay"),
    path("messages/<str:msg_id>/resume/", views.ResumeView.as_view(), name="message-resume"),
    path("messages/<str:msg_id>/commit/", views.CommitView.as_view(), name="message-commit"),
    path("messages/<str:msg_id>/rollback/", views.RollbackView.as_view(), name="message-rollback"),
    path("messages/<str:msg_id>/recall/", group_views.RecallView.as_view(), name="message-recall"),
    path("messages/<str:msg_id>/skip/", group_views.SkipView.as_view(), name="message-skip"),
    path("blocked-groups/", group_views.BlockedGroupListView.as_view(), name="blocked-group-list"),
    path("dead-letters/", views.DeadLetterListView.as_view(), name="dead-letter-list"),
    path("dead-letters/replay/", views.DeadLetterReplayView.as_view(), name="dead-letter-replay"),
    path("stats/", views.StatsView.as_view(), name="stats"),
    path("grpc-clients/", grpc_views.GrpcClientListView.as_view(), name="grpc-client-list"),
]
