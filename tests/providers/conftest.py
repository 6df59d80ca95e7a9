"""The plumber harness (tests/plumber/conftest.py) for the provider tests too."""

from tests.plumber.conftest import env, plumber  # noqa: F401 (fixtures)
