"""The list filters: choices from indexes, never from ``SELECT DISTINCT`` over a table."""

from __future__ import annotations

from django.contrib import admin

from txbroker import selectors
from txbroker.models import Delivery

Status = Delivery.Status


class ValueListFilter(admin.SimpleListFilter):
    """Choices from an index (loose scan), never from ``SELECT DISTINCT`` over the table."""

    field = ""

    def values(self) -> list[str]:
        raise NotImplementedError

    def lookups(self, request, model_admin):
        return [(v, v) for v in self.values()]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(**{self.field: self.value()})
        return queryset


class TopicFilter(ValueListFilter):
    title = "topic"
    parameter_name = "topic"
    field = "topic"

    def values(self):
        return selectors.topics()


class ProducerGroupFilter(ValueListFilter):
    title = "producer group"
    parameter_name = "producer_group"
    field = "producer_group"

    def values(self):
        return selectors.producer_groups()


class MessageGroupFilter(ValueListFilter):
    """Ordered messages of one message group: the choices are a few groups (any group given
    as ``?message_group=`` in the address filters too)."""

    title = "message group"
    parameter_name = "message_group"
    field = "message_group"

    def values(self):
        return selectors.recent_message_groups()


class ConsumerGroupFilter(admin.SimpleListFilter):
    """Messages with a delivery to this group (in the chosen delivery status, if one is)."""

    title = "consumer group"
    parameter_name = "consumer_group"

    def lookups(self, request, model_admin):
        return [(g, g) for g in selectors.consumer_groups()]

    def queryset(self, request, queryset):
        if self.value():
            status = request.GET.get(DeliveryStatusFilter.parameter_name) or None
            return queryset.filter(selectors.delivery_exists(consumer_group=self.value(), status=status))
        return queryset


class DeliveryStatusFilter(admin.SimpleListFilter):
    """Messages with a delivery in this status (to the chosen group, if one is)."""

    title = "delivery status"
    parameter_name = "delivery_status"

    def lookups(self, request, model_admin):
        return Status.choices

    def queryset(self, request, queryset):
        if self.value():
            group = request.GET.get(ConsumerGroupFilter.parameter_name) or None
            return queryset.filter(selectors.delivery_exists(consumer_group=group, status=self.value()))
        return queryset


class DeadLetterGroupFilter(admin.SimpleListFilter):
    title = "consumer group"
    parameter_name = "consumer_group"

    def lookups(self, request, model_admin):
        return [(g, f"{g} ({n})") for g, n in selectors.dead_letter_counts()]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(consumer_group=self.value())
        return queryset
