"""The API's error shapes, shared by every app.

Errors are JSON: ``{"detail": "..."}``, or for invalid input ``{"<field>": ["..."]}`` naming
each field. A domain error carries its HTTP meaning (:class:`DomainError`: a status, a code
and, for an error about one input field, that field's name); ``config.api.exception_handler``
(``REST_FRAMEWORK["EXCEPTION_HANDLER"]``) answers it, so views only validate, call one
service and serialize. Also the OpenAPI descriptions of those bodies."""

from __future__ import annotations

from typing import ClassVar, Optional

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse
from rest_framework import serializers, status
from rest_framework.exceptions import APIException


class DomainError(Exception):
    """An error of a domain service, with the answer the API gives for it: ``status_code``
    and ``code``; the body is ``{"detail": message}``, or ``{field: [message]}`` when the
    error is about one input ``field``."""

    status_code: ClassVar[int] = status.HTTP_400_BAD_REQUEST
    code: ClassVar[str] = "invalid"
    field: ClassVar[Optional[str]] = None

    def as_api_exception(self) -> APIException:
        message = str(self)
        detail = {self.field: [message]} if self.field else message
        exc = APIException(detail, self.code)
        exc.status_code = self.status_code
        return exc


class NotFoundError(DomainError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class ConflictError(DomainError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


def error(description: str) -> OpenApiResponse:
    return OpenApiResponse(response=ErrorSerializer, description=description)


def field_errors(
    description: str = "Invalid input: the fields named, each with its messages.",
) -> OpenApiResponse:
    return OpenApiResponse(
        response=OpenApiTypes.OBJECT,
        description=description,
        examples=[
            OpenApiExample(
                "invalid amount", value={"amount": ["Ensure this value is greater than or equal to 0.01."]}
            )
        ],
    )


UNAUTHORIZED = error("No or invalid credentials: send `Authorization: Token <token>` or a session.")
NOT_FOUND = error("Not found, or not the caller's.")
