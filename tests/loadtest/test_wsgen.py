"""The load generator's frame parser: markers in plain, batched, split and fragmented frames."""

from __future__ import annotations

import json

from loadtest.wsgen import Stats, WSClient, client_frame, stamp


def server_frame(payload: bytes, opcode: int = 0x1, fin: bool = True) -> bytes:
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return bytes((first, 126)) + n.to_bytes(2, "big") + payload
    return bytes((first, 127)) + n.to_bytes(8, "big") + payload


async def open_client() -> tuple[WSClient, Stats]:
    stats = Stats(recording=True)
    client = WSClient(stats, "127.0.0.1", 1, "/ws/x")
    client.data_received(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
    assert client.ready.done()
    return client, stats


def message(text: str) -> bytes:
    event = {"type": "message", "id": "1", "room": "lobby", "from": "a", "text": text}
    return json.dumps(event).encode()


async def test_counts_markers_in_json_text_and_batched_frames() -> None:
    client, stats = await open_client()
    batch = b"\n".join(message(stamp() + "x" * 50) for _ in range(3))
    data = (
        server_frame(message(stamp()))
        + server_frame(f"bob: {stamp()}".encode())
        + server_frame(batch)
        + server_frame(b'{"type":"presence","room":"lobby","event":"joined","user":"c"}')
        + server_frame(message(stamp() + "y" * 300))  # 16-bit length
    )
    # Split the stream at every byte boundary class: one byte at a time.
    for i in range(len(data)):
        client.data_received(data[i : i + 1])
    assert stats.deliveries == 6
    assert client.delivered == 6
    assert stats.other_frames == 1
    assert len(stats.latencies) == 6
    assert all(0 <= ns < 60 * 10**9 for ns in stats.latencies)


async def test_error_frames_fragments_and_close() -> None:
    client, stats = await open_client()
    text = message(stamp()).decode()
    half = len(text) // 2
    client.data_received(
        server_frame(b'{"type":"error","code":"rate_limited","detail":"slow down"}')
        + server_frame(text[:half].encode(), opcode=0x1, fin=False)
        + server_frame(text[half:].encode(), opcode=0x0, fin=True)
        + server_frame((1013).to_bytes(2, "big") + b"slow consumer", opcode=0x8)
    )
    assert stats.error_frames == 1
    assert "rate_limited" in stats.last_error
    assert stats.deliveries == 1
    assert client.close_code == 1013
    assert stats.closes == {1013: 1}


def test_client_frames_are_masked_with_zero_key() -> None:
    small = client_frame(b"hi")
    assert small == b"\x81\x82\x00\x00\x00\x00hi"
    big = client_frame(b"x" * 300)
    assert big[:4] == b"\x81\xfe\x01\x2c"
    assert big[4:8] == b"\x00\x00\x00\x00"
    assert len(big) == 8 + 300


async def test_a_101_after_the_caller_timed_out_is_dropped() -> None:
    stats = Stats()
    client = WSClient(stats, "127.0.0.1", 1, "/ws/x")
    client.ready.cancel()  # what asyncio.wait_for does to it on a timeout
    client.data_received(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
    assert not client.is_open
