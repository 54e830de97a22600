from __future__ import annotations

from collections.abc import Iterator

import pytest
from lang_fake_server import FakeNativeServer

import radixlm as rl


@pytest.fixture
def fake() -> Iterator[FakeNativeServer]:
    server = FakeNativeServer()
    yield server
    server.close()


@pytest.fixture
def endpoint(fake: FakeNativeServer) -> rl.RuntimeEndpoint:
    backend = rl.RuntimeEndpoint(fake.url)
    fake.clear()  # drop the /get_model_info call; tests assert what programs send
    return backend


@pytest.fixture(autouse=True)
def _no_default_backend() -> Iterator[None]:
    yield
    rl.global_config.default_backend = None


@pytest.fixture(scope="session")
def lang_server() -> Iterator[rl.Runtime]:
    """One real server with the default model, shared by every end-to-end frontend test."""
    runtime = rl.Runtime(log_level="warning")
    yield runtime
    runtime.shutdown()
