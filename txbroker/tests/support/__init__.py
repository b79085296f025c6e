"""A test-only Django app: consumers and a checker whose behaviour the tests steer through
the database, so that real worker processes started by the tests run them too.

Installed only when ``DJANGO_EXTRA_APPS=txbroker.tests.support`` (the test settings).
"""
