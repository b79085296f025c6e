"""API tokens that expire: rest_framework.authtoken's token (one per user), valid for
``TOKEN_TTL`` seconds after it was issued (``DJANGO_TOKEN_TTL``), revocable at any time."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed

TOKEN_EXPIRED = "Token expired: get a new one from POST /api/auth/token/."  # noqa: S105 (a message)


def token_expires_at(token: Token) -> datetime:
    return token.created + timedelta(seconds=settings.TOKEN_TTL)


def token_is_expired(token: Token) -> bool:
    return token_expires_at(token) <= timezone.now()


def token_issue(*, user: AbstractBaseUser) -> Token:
    """The user's token: the current one while it is valid, else a new one (new key)."""
    with transaction.atomic():
        token = Token.objects.select_for_update().filter(user=user).first()
        if token is not None and not token_is_expired(token):
            return token
        if token is not None:
            token.delete()
        try:
            with transaction.atomic():
                return Token.objects.create(user=user)
        except IntegrityError:
            pass  # a concurrent login of the same user created it first
    return Token.objects.get(user=user)


def token_revoke(*, user: AbstractBaseUser) -> bool:
    """End the user's token now; False when there was none."""
    deleted, _ = Token.objects.filter(user=user).delete()
    return bool(deleted)


class ExpiringTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>``, refused (401) once the token has expired."""

    def authenticate_credentials(self, key):
        user, token = super().authenticate_credentials(key)
        if token_is_expired(token):
            raise AuthenticationFailed(TOKEN_EXPIRED)
        return user, token
