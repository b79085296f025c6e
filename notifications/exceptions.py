"""The notifications app's errors, each with the answer the API gives for it (see
``config.errors.DomainError``), and their messages. The SMS errors of setting a phone
number stay ``SmsError`` / ``SmsRejected`` for callers that know the backends."""

from __future__ import annotations

from rest_framework import status

from config.errors import DomainError
from notifications.backends import SmsError, SmsRejected

SMS_PROVIDER_REFUSED = "The SMS provider refuses this number."
SMS_PROVIDER_UNAVAILABLE = "The verification code could not be sent; nothing changed, try again later."


class NotificationError(DomainError):
    """Base class of the notifications app's errors."""


class PhoneVerificationFailed(NotificationError):
    """The code does not verify the number (the message says why and what to do): 400
    naming the code field."""

    field = "code"


class PhoneRefused(SmsRejected, NotificationError):
    """The SMS provider refuses the number a code was to be sent to: 400 naming the phone."""

    field = "phone"


class PhoneCodeUnsent(SmsError, NotificationError):
    """The verification code could not be sent (the provider failed): 503."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "sms_unavailable"
