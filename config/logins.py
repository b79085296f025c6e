"""The login lockout's answers (django-axes, configured in settings): 429 with a JSON body
for the API, 429 with a page for the admin's login form."""

from __future__ import annotations

import math

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from rest_framework import status
from rest_framework.exceptions import APIException

LOGIN_LOCKED_OUT = (
    "Too many failed logins from this address or for this username: logins are refused "
    "for {minutes} minutes after the last failure, or until an operator lifts the lockout."
)


def lockout_minutes() -> int:
    return max(1, math.ceil(settings.LOGIN_COOLOFF / 60))


def lockout_message() -> str:
    return LOGIN_LOCKED_OUT.format(minutes=lockout_minutes())


class LoginLockedOut(APIException):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "login_locked_out"

    def __init__(self) -> None:
        super().__init__(lockout_message())
        self.wait = math.ceil(settings.LOGIN_COOLOFF)  # sent as Retry-After


def login_locked_out(request) -> bool:
    """Whether axes refused or locked out the login attempted with ``request`` (a Django or
    DRF request: axes flags the object ``authenticate()`` was given)."""
    return bool(getattr(request, "axes_locked_out", False))


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict | None = None
) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: what a locked-out login gets instead of the login page."""
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": lockout_message()}, status=status.HTTP_429_TOO_MANY_REQUESTS)
    else:
        response = render(
            request,
            "registration/locked_out.html",
            {"title": "Login locked", "message": lockout_message()},
            status=status.HTTP_429_TOO_MANY_REQUESTS,
        )
    response["Retry-After"] = str(math.ceil(settings.LOGIN_COOLOFF))
    return response
