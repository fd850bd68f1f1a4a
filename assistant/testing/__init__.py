"""Test helpers for plugin authors: fixtures, fake engines and conformance suites (installed with the package)."""
