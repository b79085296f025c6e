"""Filters for txbroker's admin templates."""

from __future__ import annotations

from django import template

from txbroker.admin.html import error_html

register = template.Library()


@register.filter
def txb_error(text: str) -> str:
    """A traceback folded to its last line (the exception), the whole of it one click away."""
    return error_html(text)
