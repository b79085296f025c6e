from __future__ import annotations

from txbroker.conf import txsettings

APP_LABEL = "txbroker"


class TxBrokerRouter:
    """Keeps txbroker's tables on ``TXBROKER_DATABASE`` and every other app off it (unless it
    is ``default``)."""

    def db_for_read(self, model, **hints):
        return txsettings.DATABASE if model._meta.app_label == APP_LABEL else None

    db_for_write = db_for_read

    def allow_relation(self, obj1, obj2, **hints):
        labels = {obj1._meta.app_label, obj2._meta.app_label}
        if APP_LABEL in labels:
            return labels == {APP_LABEL}
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        broker = txsettings.DATABASE
        if broker == "default":
            return None
        if app_label == APP_LABEL:
            return db == broker
        return db != broker
