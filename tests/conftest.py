"""Fixtures shared by every test module."""

import pytest


@pytest.fixture(scope="session")
def build_root(tmp_path_factory):
    """A folder for simulator builds that the tests of one session share (a Verilated model is
    built once per configuration and reused), outside the repository."""
    return tmp_path_factory.mktemp("builds")
