from __future__ import annotations

from django.apps import AppConfig


class PointsConfig(AppConfig):
    name = "points"
    label = "points"
    verbose_name = "Points"
    default_auto_field = "django.db.models.BigAutoField"
