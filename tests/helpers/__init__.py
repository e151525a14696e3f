"""Helpers shared by the tests, imported as ``from tests.helpers.<module> import ...``."""
