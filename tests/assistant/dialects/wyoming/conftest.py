"""Fixtures of the Wyoming tests: a server with the Wyoming listener on port 0, and a client that talks as Home Assistant does."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.info import Describe, Info

WYOMING = {"enabled": True, "port": 0}


def wyoming_port(server) -> int:
    """The Wyoming port a running server listens on."""
    return next(d for d in server.dialects if d.name == "wyoming").port


@dataclass
class Heard:
    """The events a synthesis answered with, and the audio they carried."""

    events: list[Event] = field(default_factory=list)

    @property
    def types(self) -> list[str]:
        return [event.type for event in self.events]

    @property
    def start(self) -> AudioStart:
        return AudioStart.from_event(next(e for e in self.events if AudioStart.is_type(e.type)))

    @property
    def pcm(self) -> bytes:
        return b"".join(AudioChunk.from_event(e).audio for e in self.events if AudioChunk.is_type(e.type))


async def read_until(client: AsyncTcpClient, last: str, timeout: float = 120) -> list[Event]:
    """Events up to and including the first of type `last` (or an `error`, or the end of the connection)."""
    seen: list[Event] = []
    while True:
        event = await asyncio.wait_for(client.read_event(), timeout)
        if event is None:
            return seen
        seen.append(event)
        if event.type in (last, "error"):
            return seen


async def describe(port: int) -> Info:
    """What Home Assistant's integration does first: `describe`, and the `info` within the 1 s it allows."""
    async with AsyncTcpClient("127.0.0.1", port) as client, asyncio.timeout(1):
        await client.write_event(Describe().event())
        while True:
            event = await client.read_event()
            assert event is not None, "the connection closed before info"
            if Info.is_type(event.type):
                return Info.from_event(event)


async def send_audio(client: AsyncTcpClient, pcm: bytes, rate: int = 16000, width: int = 2, channels: int = 1, chunk_ms: int = 100) -> None:
    """audio-start, the audio in chunks as Home Assistant streams the microphone, audio-stop."""
    await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
    step = rate * width * channels * chunk_ms // 1000
    for offset in range(0, len(pcm), step):
        await client.write_event(AudioChunk(rate=rate, width=width, channels=channels, audio=pcm[offset : offset + step]).event())
    await client.write_event(AudioStop().event())


@pytest.fixture
def heard() -> type[Heard]:
    """The Heard class, for tests that collect synthesis events."""
    return Heard
