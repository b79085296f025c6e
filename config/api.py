"""The API's project-wide REST framework plumbing (wired in ``REST_FRAMEWORK`` and
``config/urls.py``). The API speaks JSON: request bodies are JSON only, and every error,
including the ones DRF and Django answer before or around a view, is JSON
``{"detail": "..."}`` with a status the OpenAPI schema documents (``config/openapi.py``)."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import parsers, views
from rest_framework.exceptions import NotAcceptable, ParseError
from rest_framework.negotiation import DefaultContentNegotiation

from config.errors import DomainError

API_PATH_PREFIX = "/api/"
NOT_FOUND = "Not found."
TOO_DEEP = "JSON parse error - the body is nested too deeply."
TOO_LARGE = "The request body is larger than {limit} bytes."
UNKNOWN_FORMAT = "Unknown format {format!r}: ask for JSON."


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, but a body nested deeper than Python's json module can follow is a
    400 like any other malformed JSON instead of a RecursionError (a 500). txbroker's API has
    its own copy: a reusable app imports nothing from the project."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(TOO_DEEP) from None


class ContentNegotiation(DefaultContentNegotiation):
    """DRF's, but an unknown ``?format=`` is 406 like an Accept header nothing satisfies,
    not a 404 on a URL that exists."""

    def filter_renderers(self, renderers, format):
        try:
            return super().filter_renderers(renderers, format)
        except Http404:
            raise NotAcceptable(UNKNOWN_FORMAT.format(format=format)) from None


def exception_handler(exc, context):
    """DRF's handler, plus the domain errors (``config.errors.DomainError``: each answers with
    the status and body it carries) and a body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (Django
    raises it while DRF reads the body): 400 in JSON rather than Django's HTML error page."""
    if isinstance(exc, DomainError):
        exc = exc.as_api_exception()
    elif isinstance(exc, RequestDataTooBig):
        exc = ParseError(TOO_LARGE.format(limit=settings.DATA_UPLOAD_MAX_MEMORY_SIZE))
    return views.exception_handler(exc, context)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """``handler404``: a URL under /api/ that matches no route (an ``order_id`` with a "/" in
    it, say) is a JSON 404 like a missing order; elsewhere Django's page."""
    if request.path.startswith(API_PATH_PREFIX):
        return JsonResponse({"detail": NOT_FOUND}, status=404)
    return defaults.page_not_found(request, exception)
