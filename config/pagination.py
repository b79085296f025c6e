"""The API's page-number pagination, strict about its parameter: ``?page=`` or
``?page=abc`` is "no such page" (404), like a page past the end, instead of page 1."""

from __future__ import annotations

from rest_framework import pagination
from rest_framework.exceptions import NotFound

NO_SUCH_PAGE = "No such page."


class PageNumberPagination(pagination.PageNumberPagination):
    def get_page_number(self, request, paginator):
        raw = request.query_params.get(self.page_query_param)
        if raw is not None and raw not in self.last_page_strings and not raw.isdigit():
            raise NotFound(NO_SUCH_PAGE)
        return super().get_page_number(request, paginator)
