"""The order-payment apps' and txbroker's settings, from the environment. Each app writes
its defaults once (``payments.conf``, ``orders.conf``, ``notifications.conf``, ``txbroker.conf``); this
module only maps the environment's variables onto Django settings of the same names."""

from __future__ import annotations

import os

from config.settings.environment import VAR_DIR, env, env_with_defaults
from notifications.conf import DEFAULTS as NOTIFICATIONS_DEFAULTS
from orders.conf import DEFAULTS as ORDERS_DEFAULTS
from payments.conf import DEFAULTS as PAYMENTS_DEFAULTS

# --- Order-payment apps: PAYMENTS_*, ORDERS_* and NOTIFICATIONS_* (documented with their defaults) ---
globals().update(env_with_defaults(PAYMENTS_DEFAULTS))
globals().update(env_with_defaults(ORDERS_DEFAULTS))
globals().update(env_with_defaults(NOTIFICATIONS_DEFAULTS))
NOTIFICATIONS_SMS_FILE_PATH = env.str("NOTIFICATIONS_SMS_FILE_PATH", default=str(VAR_DIR / "sms.jsonl"))

# --- txbroker -------------------------------------------------------------------------------
# txbroker reads Django settings only (its defaults live in txbroker.conf). Every TXBROKER_*
# variable of the environment becomes the Django setting of the same name, so operators and
# the test and chaos harnesses shorten intervals without editing code; txbroker parses the
# text and says what is wrong with a bad value. TXBROKER_DATABASE_URL is the databases' own.
for _name, _value in os.environ.items():
    if _name.startswith("TXBROKER_") and _name != "TXBROKER_DATABASE_URL":
        globals()[_name] = _value
