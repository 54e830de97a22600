"""Shared fixtures: one real server on the default model for the end-to-end suites."""

from __future__ import annotations

import pytest

from tests.server_harness import ServerProcess


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if has_gpu:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (run through the device tool)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def default_server():
    """The default model with a 16k-token KV pool, shared by every end-to-end test module."""
    server = ServerProcess("--max-total-tokens", "16384")
    yield server
    server.stop()
