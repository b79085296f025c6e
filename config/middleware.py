"""Request bodies bounded as a whole, before anything reads them.

Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` counts a request's body and its form fields but not
the files of a multipart body, which Django streams to disk as it parses them. The API takes
JSON only and the admin's forms are small, so a body declared larger than the limit is
refused here, at once, from its ``Content-Length``: nothing of it is read or stored. (A body
sent without a length, chunked, is not read at all by Django.)
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse


class RequestBodyLimit:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0  # Django reads nothing of a body whose length it cannot parse
        if limit is not None and declared > limit:
            # Imported here: config.api imports REST framework, whose settings import
            # config.api (a cycle if the first request's middleware came first).
            from config.api import API_PATH_PREFIX, TOO_LARGE

            detail = TOO_LARGE.format(limit=limit)
            if request.path.startswith(API_PATH_PREFIX):
                return JsonResponse({"detail": detail}, status=400)
            return HttpResponseBadRequest(detail, content_type="text/plain; charset=utf-8")
        return self.get_response(request)
