"""Issue 19, hardening round two: each finding as an attack on a real server, and what it must get now."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import struct
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from assistant import AsrEngine, Capabilities, Transcript
from assistant.limits import MediaBudget
from assistant.store import PartRecord
from tests import images
from tests.conftest import Client, make_config
from tests.fakes import FakeEnginesPlugin, ScriptedDialogue

MB = 1024 * 1024


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM) in MiB."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def reset_peak_rss() -> float:
    """Reset VmHWM to the current RSS (Linux clear_refs 5); returns it in MiB."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    return peak_rss_mb()


class CountingAsr(AsrEngine):
    """An instant ASR engine that counts its calls."""

    id = "fake:counting-asr"
    capabilities = Capabilities()

    def __init__(self) -> None:
        self.calls = 0

    def transcribe(self, samples, language=None):
        self.calls += 1
        return Transcript("speech", "en", len(samples) / 16000)


def big_png(size: tuple[int, int], seed: int = 0) -> bytes:
    """A compressible RGBA PNG of `size` (a few hundred KB for tens of megapixels)."""
    from PIL import Image

    image = Image.new("RGBA", size, (10 + seed, 200, 30, 128))
    return images.encode(image, "PNG", compress_level=1)


def big_flac(seconds: float, rate: int = 384000, channels: int = 8) -> bytes:
    """Silent FLAC at `rate` with `channels`: a few dozen KB that decode to gigabytes of float samples."""
    import av

    buffer = io.BytesIO()
    layout = {2: "stereo", 8: "7.1"}[channels]
    with av.open(buffer, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout=layout)
        stream.format = "s16"
        step, pts = 4096, 0
        zeros = np.zeros((1, step * channels), dtype="<i2")
        for _ in range(int(seconds * rate / step)):
            frame = av.AudioFrame.from_ndarray(zeros, format="s16", layout=layout)
            frame.sample_rate, frame.pts = rate, pts
            pts += step
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def nan_wav(seconds: float = 20.0, rate: int = 16000) -> bytes:
    """A 32-bit float WAV whose every sample is NaN."""
    data = np.full(int(seconds * rate), np.nan, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def raw_http(port: int, request: bytes) -> bytes:
    """Send raw bytes to the server, return everything it answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def http(port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request to the server."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


# ---------------------------------------------------------------- 1. memory


async def test_images_decode_within_the_media_budget(start_server, connect_client, tmp_path):
    """Three turns at once of eight 24-megapixel RGBA PNGs: the media budget's peak stays within it, and peak RSS with it."""
    budget = 256 * MB
    config = make_config(tmp_path, limits={"media_bytes_in_flight": budget, "turns_per_minute": 1000})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    pngs = [base64.b64encode(await asyncio.to_thread(big_png, (6000, 4000), seed)).decode() for seed in range(3)]
    before = await asyncio.to_thread(reset_peak_rss)

    async def turn(png: str) -> list[dict]:
        async with connect_client(server, max_size=None) as client:
            await client.start()
            return await client.say_parts([{"type": "image", "data": png}] * 8 + [{"type": "text", "text": "what?"}])

    done = await asyncio.gather(*(turn(png) for png in pngs))
    grew = peak_rss_mb() - before
    media = server.app.media
    print(f"\nmemory: 3 turns x 8 images of 6000x4000 RGBA: peak RSS +{grew:.0f} MiB, media budget peak {media.peak / MB:.0f} "
          f"of {budget / MB:.0f} MiB")
    assert all(events[-1]["status"] == "completed" for events in done)
    assert media.peak <= budget and media.used == 0
    assert grew < budget / MB + 768, "decoded pixels are bounded by the budget (generous margin for the rest)"
    status, _, body = await asyncio.to_thread(http, server.port, "/metrics")
    assert status == 200 and b"assistant_media_bytes_in_flight 0.0" in body and b"assistant_media_bytes_budget" in body


async def test_a_multichannel_384_khz_flac_decodes_frame_by_frame(start_server, connect_client, tmp_path):
    """A 48 KB FLAC of 100 s at 384 kHz in 8 channels: peak RSS stays far below its 1.2 GB of decoded samples."""
    asr = CountingAsr()
    config = make_config(tmp_path, engines={"asr": "fake"})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue(), asr=asr),))
    flac = await asyncio.to_thread(big_flac, 100.0)
    before = await asyncio.to_thread(reset_peak_rss)
    async with connect_client(server) as client:
        await client.start()
        await client.send({"type": "turn.create", "content": [{"type": "audio", "format": "flac", "data": base64.b64encode(flac).decode()}]})
        done = (await client.recv_until("transcript.done"))[-1]
    grew = peak_rss_mb() - before
    print(f"\nmemory: {len(flac) // 1024} KB FLAC, 100 s x 8 channels at 384 kHz: peak RSS +{grew:.0f} MiB")
    assert done["text"] == "" and asr.calls == 0, "silence"
    assert grew < 300


async def test_the_media_budget_waits_then_refuses():
    """Past the budget, a request waits for room, and gets none (False) when nothing frees up in time."""
    budget = MediaBudget(100)
    assert await budget.acquire(80, 0)
    assert not await budget.acquire(30, 0.05)
    waiting = asyncio.create_task(budget.acquire(30, 5))
    await asyncio.sleep(0.05)
    budget.release(80)
    assert await waiting and budget.used == 30 and budget.peak == 80
    budget.release(30)
    assert await budget.acquire(500, 0), "one item larger than the whole budget passes alone"


# ---------------------------------------------------------------- 3. DNS rebinding


async def test_with_auth_off_only_ip_and_localhost_hosts_are_served(start_server, tmp_path):
    """A rebound name (Host: evil.example) gets 421 on HTTP and on the websocket; IPs, localhost and allowed_hosts pass."""
    config = make_config(tmp_path, server={"allowed_hosts": ["assistant.lan"]})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    port = server.port
    for host, status in (("evil.example", 421), (f"evil.example:{port}", 421), (f"127.0.0.1:{port}", 200),
                         (f"localhost:{port}", 200), (f"[::1]:{port}", 200), (f"assistant.lan:{port}", 200)):
        assert (await asyncio.to_thread(http, port, "/metrics", headers={"Host": host}))[0] == status, host
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://evil.example:{port}/ws", host="127.0.0.1", port=port, origin=f"http://evil.example:{port}"):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 421


async def test_with_auth_on_any_host_is_served(start_server, tmp_path):
    """With tokens, the token is what protects: another Host is no reason to refuse (but /metrics needs the token)."""
    config = make_config(tmp_path, auth={"tokens": [{"principal": "alice", "sha256": "0" * 64}]})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    assert (await asyncio.to_thread(http, server.port, "/metrics", headers={"Host": "assistant.example"}))[0] == 401


# ---------------------------------------------------------------- 4. engine queue bound


async def test_a_burst_of_200_turns_admits_at_most_max_queued(start_server, connect_client, tmp_path):
    """200 turns sent at once on 200 connections with max_queued = 32: at most 32 are admitted, the rest answer rate_limited."""
    gate = threading.Event()
    engine = ScriptedDialogue(gate=gate, record=False)
    config = make_config(
        tmp_path, scheduler={"max_queued": 32}, limits={"turns_per_minute": 10_000, "sessions_per_principal": 1000, "conversations_per_minute": 1000},
    )
    server = await start_server(config, plugins=(FakeEnginesPlugin(engine),))
    clients = [Client(await connect(f"ws://127.0.0.1:{server.port}/ws")) for _ in range(200)]
    try:
        await asyncio.gather(*(client.start() for client in clients))
        await asyncio.gather(*(client.send({"type": "turn.create", "content": [{"type": "text", "text": "hi"}]}) for client in clients))
        firsts = await asyncio.gather(*(client.recv() for client in clients))
        depth = server.app.scheduler.in_flight(server.app.engines["dialogue"])
        admitted = sum(event["type"] == "turn.created" for event in firsts)
        refused = sum(event.get("code") == "rate_limited" for event in firsts)
        print(f"\nqueue: 200 turns at once, max_queued 32: {admitted} admitted (queue depth {depth}), {refused} rate_limited")
        assert admitted <= 32 and depth <= 32 and admitted + refused == 200
        gate.set()
        for client, first in zip(clients, firsts, strict=True):
            if first["type"] == "turn.created":
                assert (await client.recv_until("response.done"))[-1]["status"] == "completed"
    finally:
        gate.set()
        await asyncio.gather(*(client.ws.close() for client in clients))


# ---------------------------------------------------------------- 5. stored before refused; history


async def test_a_text_turn_longer_than_the_context_is_refused_before_it_is_stored(start_server, connect_client, tmp_path):
    """A 1 MB text turn answers too_large and leaves nothing in the conversation."""
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with connect_client(server) as client:
        await client.start()
        await client.send({"type": "turn.create", "event_id": "big", "content": [{"type": "text", "text": "x" * 1_000_000}]})
        error = await client.recv()
        assert (error["code"], error["ref"]) == ("too_large", "big") and "context_chars" in error["message"]
        await client.send({"type": "conversation.get"})
        assert (await client.recv_until("conversation.history"))[-1]["turns"] == []


async def test_the_context_of_a_turn_is_bounded_by_characters_not_by_stored_history(start_server, connect_client, tmp_path):
    """Six 1 MB turns stored (by an older version): the next "hi" hands the engine at most context_chars of history."""
    engine = ScriptedDialogue()
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(engine),))
    async with connect_client(server) as client:
        conversation_id = (await client.start())["conversation_id"]
        store = server.app.store.store
        for _ in range(6):
            begun = await asyncio.to_thread(store.begin_turn, conversation_id, [PartRecord("text", "y" * 1_000_000)], 1)
            await asyncio.to_thread(store.finish_reply, begun.reply_id, text="ok", status="completed")
        assert (await client.say("hi"))[-1]["status"] == "completed"
    sent = sum(len(message.content) for message in engine.requests[-1].messages[1:])
    print(f"\ncontext: after six stored 1 MB turns, \"hi\" hands the engine {sent} characters of history")
    assert sent <= server.app.config.dialogue.context_chars and engine.requests[-1].messages[-1].content == "hi"


async def test_conversation_get_pages_a_long_history(start_server, connect_client, tmp_path):
    """2,000 turns: pages of `limit` turns, `before` the oldest one seen, `has_more` until the first; big turns cut a page short."""
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with connect_client(server, max_size=None) as client:
        conversation_id = (await client.start())["conversation_id"]
        store = server.app.store.store

        def fill() -> None:
            for i in range(1000):
                begun = store.begin_turn(conversation_id, [PartRecord("text", f"turn {i}")], 1)
                store.finish_reply(begun.reply_id, text=f"reply {i}", status="completed")

        await asyncio.to_thread(fill)
        await client.send({"type": "conversation.get"})
        raw = await client.ws.recv()
        page = json.loads(raw)
        assert len(page["turns"]) == 100 and page["has_more"] and page["turns"][-1]["content"][0]["text"] == "reply 999"
        seen, before = len(page["turns"]), page["turns"][0]["turn_id"]
        while True:
            await client.send({"type": "conversation.get", "before": before, "limit": 1000})
            page = (await client.recv_until("conversation.history"))[-1]
            seen += len(page["turns"])
            if not page["has_more"]:
                break
            before = page["turns"][0]["turn_id"]
        assert seen == 2000 and page["turns"][0]["content"][0]["text"] == "turn 0"
        for _ in range(20):  # turns of 1 MB each (stored by an older version)
            begun = await asyncio.to_thread(store.begin_turn, conversation_id, [PartRecord("text", "z" * 1_000_000)], 1)
            await asyncio.to_thread(store.finish_reply, begun.reply_id, text="ok", status="completed")
        await client.send({"type": "conversation.get", "limit": 1000})
        big = await client.ws.recv()
        print(f"\nhistory: first page of 2,000 short turns {len(raw) // 1024} KB; of 20 turns of 1 MB {len(big) // 1024} KB")
        assert len(big) < 3 * MB and json.loads(big)["has_more"]
        await client.send({"type": "conversation.get", "before": "no-such-turn", "event_id": "g"})
        assert (await client.recv())["code"] == "not_found"


# ---------------------------------------------------------------- 6. sessions with auth off


async def test_with_auth_off_one_address_cannot_lock_out_another(start_server, tmp_path):
    """sessions_per_principal counts per client address when everyone is `local`; max_sessions bounds them all."""
    config = make_config(tmp_path, limits={"sessions_per_principal": 2, "max_sessions": 3})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    url = f"ws://127.0.0.1:{server.port}/ws"

    async def session(source: str) -> tuple[Client, dict]:
        client = Client(await connect(url, local_addr=(source, 0)))
        await client.send({"type": "session.start"})
        return client, await client.recv()

    clients = []
    try:
        for source, expected in (("127.0.0.1", "session.started"), ("127.0.0.1", "session.started"), ("127.0.0.1", "error"),
                                 ("127.0.0.2", "session.started"), ("127.0.0.3", "error")):
            client, answer = await session(source)
            clients.append(client)
            assert answer["type"] == expected, (source, answer)
            if expected == "error":
                assert answer["code"] == "rate_limited"
                with pytest.raises(ConnectionClosed) as closed:
                    await client.recv(timeout=5)
                assert closed.value.rcvd.code == 1013
    finally:
        await asyncio.gather(*(client.ws.close() for client in clients))


# ---------------------------------------------------------------- 7. smaller ones


async def test_session_start_flood_is_rate_limited(start_server, connect_client, tmp_path):
    """New conversations per minute are limited; resuming an existing one still works."""
    config = make_config(tmp_path, limits={"conversations_per_minute": 5})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with connect_client(server) as client:
        first = (await client.start())["conversation_id"]
        for _ in range(4):
            await client.start()
        await client.send({"type": "session.start", "event_id": "6"})
        error = await client.recv()
        assert (error["code"], error["ref"]) == ("rate_limited", "6") and "5 new conversations per minute" in error["message"]
        assert (await client.start(first))["resumed"] is True


async def test_nested_json_surrogates_and_huge_event_ids_answer_bad_request(start_server, connect_client, tmp_path):
    """Deep nesting, lone surrogates (event_id, text) and an 8 MB event_id each answer bad_request with a short ref; the connection goes on."""
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with connect_client(server, max_size=None) as client:
        await client.start()
        frames = [
            "[" * 200_000 + "]" * 200_000,
            '{"type": "turn.create", "content": ' + "[" * 50_000 + "]" * 50_000 + "}",
            '{"type": "turn.create", "event_id": "\\ud800", "content": [{"type": "text", "text": "hi"}]}',
            '{"type": "turn.create", "content": [{"type": "text", "text": "a\\udfffb"}]}',
            json.dumps({"type": "turn.create", "event_id": "e" * 8_000_000, "content": [{"type": "text", "text": "hi"}]}),
        ]
        for frame in frames:
            await client.send(frame)
            raw = await client.ws.recv()
            error = json.loads(raw)
            assert error["type"] == "error" and error["code"] == "bad_request", (frame[:60], error)
            assert len(raw) < 2000 and len(error.get("ref") or "") <= 200
        assert (await client.say("still here"))[-1]["text"] == "You said: still here"


async def test_duplicate_access_headers_answer_400(start_server, tmp_path):
    """Two Host, Origin or Authorization headers: 400, never a 500."""
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    for extra in (b"Host: 127.0.0.1\r\n", b"Authorization: Bearer a\r\nAuthorization: Bearer b\r\n", b"Origin: http://a\r\nOrigin: http://b\r\n"):
        for path in (b"/metrics", b"/healthz"):
            answer = await asyncio.to_thread(raw_http, server.port, b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + b"Connection: close\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 400"), (extra, answer[:100])


async def test_only_get_and_head_are_served_and_head_has_no_body(start_server, tmp_path):
    """PUT, DELETE, OPTIONS and POST answer 405; HEAD answers the headers alone."""
    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    for method in ("PUT", "DELETE", "OPTIONS", "POST"):
        for path in ("/healthz", "/metrics", "/", "/attachments/" + "0" * 64):
            assert (await asyncio.to_thread(http, server.port, path, method))[0] == 405, (method, path)
    answer = await asyncio.to_thread(raw_http, server.port, b"HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\n")


async def test_attachments_are_private_and_not_sniffed(start_server, connect_client, tmp_path):
    """An authenticated attachment is sent Cache-Control: private and X-Content-Type-Options: nosniff."""
    import hashlib

    token = "secret-token"
    config = make_config(tmp_path, auth={"tokens": [{"principal": "alice", "sha256": hashlib.sha256(token.encode()).hexdigest()}]})
    server = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    png = images.solid("red")
    async with connect_client(server, additional_headers={"Authorization": f"Bearer {token}"}) as client:
        await client.start()
        await client.say_parts([{"type": "image", "data": base64.b64encode(png).decode()}, {"type": "text", "text": "?"}])
    status, headers, body = await asyncio.to_thread(
        http, server.port, f"/attachments/{hashlib.sha256(png).hexdigest()}", headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 200 and body == png
    assert headers["cache-control"].startswith("private") and headers["x-content-type-options"] == "nosniff"


async def test_a_float_wav_full_of_nan_is_silence(start_server, connect_client, tmp_path):
    """20 s of NaN samples: an empty transcript at once, the recognizer never called."""
    asr = CountingAsr()
    server = await start_server(make_config(tmp_path, engines={"asr": "fake"}), plugins=(FakeEnginesPlugin(ScriptedDialogue(), asr=asr),))
    async with connect_client(server) as client:
        await client.start()
        await client.send({"type": "turn.create", "content": [{"type": "audio", "format": "wav", "data": base64.b64encode(nan_wav()).decode()}]})
        done = (await client.recv_until("transcript.done"))[-1]
    assert done["text"] == "" and asr.calls == 0


async def test_healthz_is_503_while_the_database_takes_no_writes(start_server, tmp_path):
    """The database turns read-only under a running server (as a remount would): /healthz says so, and recovers."""
    from assistant.store import open_engine

    server = await start_server(make_config(tmp_path), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    assert (await asyncio.to_thread(http, server.port, "/healthz"))[0] == 200
    store = server.app.store.store
    writable = store.engine
    store.engine = open_engine(f"sqlite:///file:{tmp_path / 'assistant.db'}?mode=ro&uri=true")
    try:
        await asyncio.sleep(1.1)  # past the probe's cache
        status, _, body = await asyncio.to_thread(http, server.port, "/healthz")
        assert (status, body) == (503, b"the database does not take writes\n")
    finally:
        store.engine.dispose()
        store.engine = writable
    await asyncio.sleep(1.1)
    assert (await asyncio.to_thread(http, server.port, "/healthz"))[0] == 200


async def test_a_sqlite_uri_filename_opens_that_file(start_server, connect_client, tmp_path):
    """store.url = sqlite:///file:PATH?...&uri=true opens the database at PATH (relative to the config), never a folder named `file:`."""
    first = await start_server(make_config(tmp_path, store={"url": "sqlite:///data/x.db"}), plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with connect_client(first) as client:
        conversation_id = (await client.start())["conversation_id"]
        await client.say("remember me")
    await first.shutdown(grace_s=0)
    config = make_config(tmp_path, store={"url": "sqlite:///file:data/x.db?mode=rw&uri=true"})
    second = await start_server(config, plugins=(FakeEnginesPlugin(ScriptedDialogue()),))
    async with connect_client(second) as client:
        assert (await client.start(conversation_id))["resumed"] is True
    assert not any(Path(tmp_path).rglob("file:*"))
    await second.shutdown(grace_s=0)
    with pytest.raises(FileNotFoundError):
        await start_server(make_config(tmp_path, store={"url": "sqlite:///file:data/missing.db?mode=ro&uri=true"}))
