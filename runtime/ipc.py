"""ZMQ plumbing: ipc:// endpoints in a private directory and msgspec encoding of io_struct messages."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import msgspec
import zmq

from radixlm.runtime.io_struct import ToDetokenizer, ToScheduler, ToTokenizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IpcEndpoints:
    """One private directory (mode 0700) holding the three sockets; removed on shutdown."""

    directory: str
    to_scheduler: str
    to_detokenizer: str
    to_tokenizer: str

    @classmethod
    def create(cls) -> IpcEndpoints:
        directory = tempfile.mkdtemp(prefix="radixlm-ipc-")
        os.chmod(directory, 0o700)
        return cls(
            directory=directory,
            to_scheduler=f"ipc://{directory}/scheduler",
            to_detokenizer=f"ipc://{directory}/detokenizer",
            to_tokenizer=f"ipc://{directory}/tokenizer",
        )

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class Channel:
    """A one-way typed ZMQ channel: PUSH on the sending side, PULL (bound) on the receiving side."""

    def __init__(
        self, context: zmq.Context, endpoint: str, message_type: Any, *, receive: bool
    ) -> None:
        self.socket = context.socket(zmq.PULL if receive else zmq.PUSH)
        self.socket.setsockopt(zmq.LINGER, 0)
        if receive:
            self.socket.bind(endpoint)
        else:
            self.socket.connect(endpoint)
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(message_type)

    def send(self, message: Any) -> None:
        self.socket.send(self._encoder.encode(message), copy=False)

    def recv(self) -> Any:
        return self._decoder.decode(self.socket.recv(copy=False).buffer)

    def recv_valid(self) -> Any:
        """Like ``recv``, but logs and skips a message that does not decode (a sender bug must
        not take the receiving process, and every other request, down)."""
        while True:
            try:
                return self.recv()
            except msgspec.DecodeError:
                logger.exception("dropped an undecodable message")

    def recv_nowait(self) -> Any | None:
        try:
            frame = self.socket.recv(flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        return self._decoder.decode(frame.buffer)

    def decode(self, frame: bytes | memoryview) -> Any:
        return self._decoder.decode(frame)

    def close(self) -> None:
        self.socket.close(linger=0)


def scheduler_inbox(context: zmq.Context, endpoints: IpcEndpoints) -> Channel:
    return Channel(context, endpoints.to_scheduler, ToScheduler, receive=True)


def detokenizer_inbox(context: zmq.Context, endpoints: IpcEndpoints) -> Channel:
    return Channel(context, endpoints.to_detokenizer, ToDetokenizer, receive=True)


def tokenizer_inbox(context: zmq.Context, endpoints: IpcEndpoints) -> Channel:
    return Channel(context, endpoints.to_tokenizer, ToTokenizer, receive=True)


def outbox(context: zmq.Context, endpoint: str) -> Channel:
    return Channel(context, endpoint, Any, receive=False)
