"""The test suite; a package so that test modules import shared helpers (e.g. `tests.data.layouts`)."""
