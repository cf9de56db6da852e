"""Fixtures for the end-to-end tests."""

from tests.peers.orthanc import orthanc  # noqa: F401 - fixture re-export
