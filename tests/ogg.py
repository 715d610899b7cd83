"""A small, real Ogg Opus file made with the standard library (nothing here encodes
audio): the Ogg pages (RFC 3533) carrying OpusHead, OpusTags and 20 ms Opus packets of
silence (RFC 7845), as the fake egress uploads and browsers play."""

from __future__ import annotations

import struct

SAMPLE_RATE = 48_000
PRE_SKIP = 312
SAMPLES_PER_PACKET = 960  # 20 ms at 48 kHz
# TOC 0xF8 (CELT-only, fullband, 20 ms, mono, one frame) and a frame that decodes to
# silence: the packet Opus encoders emit for digital silence.
SILENT_PACKET = b"\xf8\xff\xfe"
PACKETS_PER_PAGE = 50


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_TABLE = _crc_table()


def _crc(data: bytes) -> int:
    # Ogg's CRC-32: polynomial 0x04C11DB7, no reflection, initial value and final XOR 0.
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _TABLE[((crc >> 24) & 0xFF) ^ byte]
    return crc


def _page(packets: list[bytes], *, granule: int, sequence: int, flags: int, serial: int) -> bytes:
    lacing = b""
    for packet in packets:
        lacing += b"\xff" * (len(packet) // 255) + bytes([len(packet) % 255])
    header = struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, serial, sequence, 0, len(lacing))
    page = header + lacing + b"".join(packets)
    return page[:22] + struct.pack("<I", _crc(page)) + page[26:]


def ogg_opus_silence(seconds: float = 2.0, *, serial: int = 0x5EC0) -> bytes:
    """`seconds` of mono silence as an Ogg Opus file (a few hundred bytes a second)."""
    head = struct.pack("<8sBBHIhB", b"OpusHead", 1, 1, PRE_SKIP, SAMPLE_RATE, 0, 0)
    vendor = b"voicecalls tests"
    tags = struct.pack("<8sI", b"OpusTags", len(vendor)) + vendor + struct.pack("<I", 0)
    pages = [
        _page([head], granule=0, sequence=0, flags=0x02, serial=serial),
        _page([tags], granule=0, sequence=1, flags=0x00, serial=serial),
    ]
    total = round(seconds * SAMPLE_RATE / SAMPLES_PER_PACKET)
    written = 0
    while written < total:
        count = min(PACKETS_PER_PAGE, total - written)
        written += count
        last = written == total
        pages.append(
            _page(
                [SILENT_PACKET] * count,
                granule=PRE_SKIP + written * SAMPLES_PER_PACKET,
                sequence=len(pages),
                flags=0x04 if last else 0x00,
                serial=serial,
            )
        )
    return b"".join(pages)
