"""What every txbroker admin page shares: read-only rows, the permissions that open them,
and a paginator that never counts a large table."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponseBadRequest
from django.utils.functional import cached_property

from txbroker import selectors
from txbroker.ids import could_be_msg_id

REPLAY_PERMISSION = "txbroker.replay_message"
RESUME_PERMISSION = "txbroker.resume_message"
RESOLVE_PERMISSION = "txbroker.resolve_message"
RECALL_PERMISSION = "txbroker.recall_message"
SKIP_PERMISSION = "txbroker.skip_delivery"
VIEW_PERMISSION = "txbroker.view_message"


def actor(request: HttpRequest) -> str:
    return request.user.get_username()


# --- counting without counting --------------------------------------------------------------
class CheapCountPaginator(Paginator):
    """A paginator whose ``count`` never scans a large table.

    It counts at most ``CAP + 1`` rows (``SELECT COUNT(*) FROM (... LIMIT CAP + 1)``): below
    the cap that is the exact count, and cheap. Past it, the count is PostgreSQL's estimate:
    ``pg_class.reltuples`` for the whole table, or the planner's row estimate for a filtered
    list. Page links stay usable; the last page of an estimate may be short or empty.
    """

    CAP = 10_000

    def __init__(self, object_list, per_page, orphans=0, allow_empty_first_page=True, **kwargs):
        super().__init__(object_list, per_page, orphans=0, allow_empty_first_page=allow_empty_first_page)

    @cached_property
    def count(self) -> int:
        qs = self.object_list
        exact = qs.order_by()[: self.CAP + 1].count()
        self.estimated = exact > self.CAP
        if not self.estimated:
            return exact
        if not qs.query.where:
            estimate = selectors.table_row_estimate(qs.model)
        else:
            estimate = selectors.query_row_estimate(qs.order_by())
        return max(exact, estimate or 0)


class ReadOnlyAdmin:
    """Broker rows change only through ``operations.py``: never added, edited or deleted here.

    A NUL in a filter or an object id cannot be in any row (PostgreSQL text holds none):
    a filter with one is a 400 and such an id a missing object, never a database error."""

    def changelist_view(self, request, extra_context=None):
        if any("\x00" in key or any("\x00" in v for v in values) for key, values in request.GET.lists()):
            return HttpResponseBadRequest("A filter or search term contains a NUL character.")
        return super().changelist_view(request, extra_context)

    def get_object(self, request, object_id, from_field=None):
        if not could_be_msg_id(str(object_id)):
            return None
        return super().get_object(request, object_id, from_field)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class MessageViewerPages:
    """Pages about messages (dead letters, dashboard): for whoever may view messages."""

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm(VIEW_PERMISSION) or super().has_view_permission(request, obj)

    def has_module_permission(self, request):
        return self.has_view_permission(request)
