"""The operator's admin: find a message (by id, key, topic, time, state, group), read what
happened to it, and make it go through. Every action goes through ``operations`` behind a
confirmation page and a model permission, and is recorded in the trace with the username.

Built for a message table of millions of rows: no full COUNT (:class:`CheapCountPaginator`
in ``base``), no ``SELECT DISTINCT`` for filter choices (loose index scans, ``filters``),
one prefetch for the per-group delivery summary of a page, and searches that hit the
primary key and key indexes.

``messages``: the message list and page; ``message_actions``: their confirmation pages
and bulk actions; ``group_actions``: recall, skip and the blocked message groups page; ``deliveries``: a message's deliveries and the dead-letter queue;
``dashboard``: the dashboard page; ``grpc_clients``: the RocketMQ clients over gRPC;
``html``: shared HTML helpers.
"""

# Django imports txbroker.admin (autodiscovery): these modules register the ModelAdmins.
from txbroker.admin import dashboard, deliveries, grpc_clients, messages, remote  # noqa: F401
