"""``make test`` is reproducible: the property-based tests run under the derandomized
``suite`` hypothesis profile (root ``conftest.py``) and schemathesis from a fixed seed;
``make fuzz`` (the ``fuzz`` profile) is random unless given a seed."""

from __future__ import annotations

from hypothesis import settings

from config.tests.test_api_fuzz import SUITE_SEED, schemathesis_config


def test_the_suite_profile_is_derandomized_and_keeps_no_example_database():
    suite = settings.get_profile("suite")
    assert suite.derandomize
    assert suite.database is None


def test_the_suite_profile_is_loaded_unless_another_is_asked_for(pytestconfig):
    if pytestconfig.getoption("hypothesis_profile") in (None, "suite"):
        assert settings.default.derandomize
        assert settings.default == settings.get_profile("suite")


def test_the_fuzz_profile_is_random():
    fuzz = settings.get_profile("fuzz")
    assert not fuzz.derandomize
    assert fuzz.database is None


def test_schemathesis_draws_from_the_given_seed_else_the_suite_seed(pytestconfig):
    given = pytestconfig.getoption("hypothesis_seed")
    config = schemathesis_config(pytestconfig)
    if given is not None:
        assert config.seed == int(given)
    elif settings.default.derandomize:
        assert config.has_explicit_seed
        assert config.seed == SUITE_SEED
    else:
        assert not config.has_explicit_seed
