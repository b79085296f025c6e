import pytest


@pytest.fixture(autouse=True)
def plain_http(settings):
    """The suite runs with DEBUG off; the test client speaks plain HTTP."""
    settings.SECURE_SSL_REDIRECT = False
