"""Production hardening, on top of ``config.settings.base`` whenever DEBUG is off (the
default): HTTPS redirect, HSTS, secure cookies, nosniff, no framing. ``manage.py check
--deploy`` reports nothing with the production variables the README lists (tested)."""

from __future__ import annotations

from config.settings.base import NUM_PROXIES, env

# X-Forwarded-Proto only from a proxy we trust (DJANGO_NUM_PROXIES): otherwise any client
# could say its plain-HTTP request was HTTPS.
if NUM_PROXIES:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
