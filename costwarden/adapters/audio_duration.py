"""The duration of an audio file read from its bytes alone: no decoder, no audio library.

OpenAI bills ``whisper-1`` per second of the audio uploaded, and ``gpt-4o-transcribe`` in audio
tokens that grow with it, so the call-guard must know an upload's duration before the request
leaves. Where the container says it, cheaply and exactly, it is read:

* **WAV** (RIFF/WAVE): the ``data`` chunk's bytes over the ``fmt `` chunk's byte rate (the bytes
  actually present when the header's size is larger or unset, as a streamed WAV leaves it);
* **FLAC**: ``STREAMINFO``'s total samples over its sample rate (0 samples means "unknown");
* **MP3** (MPEG audio, ``mpga`` / ``mpeg``; an ID3v2 tag skipped): the frame count of a
  Xing / Info or VBRI header when the first frame has one, else every frame header walked (each
  frame's samples over its sample rate) — what is left after the last frame is bounded as below,
  unless it is an ID3v1 / APE / Lyrics tag;
* **Ogg** (Opus, Vorbis, FLAC in Ogg): the last page's granule position over the stream's rate
  (48 kHz for Opus, less its pre-skip);
* **MP4 / M4A**: the movie header's (``moov/mvhd``) duration over its timescale.

Anything else (WebM/Matroska, AAC in ADTS, a cut or inconsistent header) is None::

    >>> pcm = b"RIFF" + (36 + 32000).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little") + \\
    ...     bytes.fromhex("0100 0100 803e0000 007d0000 0200 1000") + b"data" + (32000).to_bytes(4, "little")
    >>> audio_duration(pcm + bytes(32000))
    Duration(seconds=1.0, source='wav')

:func:`duration_bound` never is: without a readable header it bounds the duration by the file's
size at :data:`MIN_BITRATE_BPS`, the lowest bitrate a speech codec OpenAI accepts is commonly run
at (Opus's floor), so a file really encoded lower would be longer than the bound. The bound is
coarse: a 32 kbit/s WebM is reserved about 5.3 times its real length (a 64 kbit/s one 10.7 times);
the settlement (the response's ``usage``) puts it right. Headers are trusted as players trust
them: a file whose header lies about its length is reserved what the header says.
"""

from __future__ import annotations

from typing import NamedTuple

MIN_BITRATE_BPS = 6_000
"""The lowest bitrate (bits/s) the size bound assumes: Opus's floor. MP3 cannot go below 8 kbit/s."""
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
"""OpenAI's upload limit for ``audio/transcriptions`` and ``audio/translations`` (25 MB)."""


class Duration(NamedTuple):
    """Seconds of audio, and how they were known: a format's name (``wav``, ``flac``, ``mp3``,
    ``ogg``, ``mp4``) when read from its header, ``size`` when bounded by the file's size."""

    seconds: float
    source: str

    @property
    def exact(self) -> bool:
        return self.source != "size"


def duration_bound(data: bytes) -> Duration:
    """The duration of ``data`` from its header, else the most it can be (:data:`MIN_BITRATE_BPS`)."""
    found = audio_duration(data)
    return found if found is not None else size_bound(len(data))


def size_bound(size: int) -> Duration:
    """The longest audio ``size`` bytes can hold at :data:`MIN_BITRATE_BPS`."""
    return Duration(size * 8 / MIN_BITRATE_BPS, "size")


def audio_duration(data: bytes) -> Duration | None:
    """The duration of a WAV, FLAC, MP3, Ogg or MP4 file from its header; None when unreadable."""
    try:
        return _sniffed(data)
    except (IndexError, ValueError, ZeroDivisionError):
        return None


def _sniffed(data: bytes) -> Duration | None:
    head = data[:12]
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return _found(_wav(data), "wav")
    if head[:4] == b"fLaC":
        return _found(_flac(data, 4), "flac")
    if head[:4] == b"OggS":
        return _found(_ogg(data), "ogg")
    if head[4:8] == b"ftyp":
        return _found(_mp4(data), "mp4")
    start = _id3v2_end(data)
    if data[start:start + 4] == b"fLaC":
        return _found(_flac(data, start + 4), "flac")
    return _found(_mp3(data, start), "mp3")


def _found(seconds: float | None, source: str) -> Duration | None:
    return Duration(seconds, source) if seconds is not None and seconds > 0 else None


def _u32le(data: bytes, at: int) -> int:
    if at + 4 > len(data):
        raise IndexError(at)
    return int.from_bytes(data[at:at + 4], "little")


def _u32(data: bytes, at: int) -> int:
    if at + 4 > len(data):
        raise IndexError(at)
    return int.from_bytes(data[at:at + 4], "big")


def _wav(data: bytes) -> float | None:
    at, byte_rate = 12, 0
    while at + 8 <= len(data):
        kind, size = data[at:at + 4], _u32le(data, at + 4)
        if kind == b"fmt ":
            byte_rate = _u32le(data, at + 16)
        elif kind == b"data":
            present = len(data) - at - 8
            return min(size, present) / byte_rate if byte_rate else None
        at += 8 + size + (size & 1)  # chunks are padded to an even length
    return None


def _flac(data: bytes, at: int) -> float | None:
    if data[at] & 0x7F != 0:  # the first metadata block must be STREAMINFO
        return None
    info = data[at + 4:at + 4 + 34]
    if len(info) < 34:
        return None
    bits = int.from_bytes(info[10:18], "big")  # rate (20) channels-1 (3) bps-1 (5) total samples (36)
    rate, samples = bits >> 44, bits & ((1 << 36) - 1)
    return samples / rate if rate and samples else None


def _ogg(data: bytes) -> float | None:
    rate, skip = _ogg_rate(data)
    last = data.rfind(b"OggS")
    while last >= 0:
        granule = int.from_bytes(data[last + 6:last + 14], "little")
        if len(data) >= last + 14 and granule != (1 << 64) - 1:  # -1: no packet ends on this page
            return max(granule - skip, 0) / rate if rate else None
        last = data.rfind(b"OggS", 0, last)
    return None


def _ogg_rate(data: bytes) -> tuple[int, int]:
    """(samples a second, pre-skip) of the first logical stream, from its identification packet."""
    packet = data[27 + data[26]:]  # after the first page's 27-byte header and its segment table
    if packet.startswith(b"OpusHead"):
        return 48_000, int.from_bytes(packet[10:12], "little")
    if packet.startswith(b"\x01vorbis"):
        return _u32le(packet, 12), 0
    if packet.startswith(b"\x7fFLAC") and packet[9:13] == b"fLaC":
        return int.from_bytes(packet[13 + 4 + 10:13 + 4 + 13], "big") >> 4, 0
    return 0, 0


def _mp4(data: bytes) -> float | None:
    moov = _box(data, 0, len(data), b"moov")
    mvhd = _box(data, moov[0], moov[1], b"mvhd") if moov else None
    if mvhd is None:
        return None
    at = mvhd[0]
    if data[at] == 1:  # version 1: 64-bit times and duration
        scale, duration = _u32(data, at + 20), int.from_bytes(data[at + 24:at + 32], "big")
    else:
        scale, duration = _u32(data, at + 12), _u32(data, at + 16)
    return duration / scale if scale else None


def _box(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    """(content start, end) of the first box of ``kind`` between ``start`` and ``end``."""
    at = start
    while at + 8 <= end:
        size, name, header = _u32(data, at), data[at + 4:at + 8], 8
        if size == 1:
            size, header = int.from_bytes(data[at + 8:at + 16], "big"), 16
        elif size == 0:
            size = end - at
        if size < header:
            return None
        if name == kind:
            return at + header, min(at + size, end)
        at += size
    return None


def _id3v2_end(data: bytes) -> int:
    if data[:3] != b"ID3" or len(data) < 10:
        return 0
    size = 0
    for byte in data[6:10]:  # a synchsafe integer: 7 bits a byte
        size = size << 7 | (byte & 0x7F)
    return 10 + size + (10 if data[5] & 0x10 else 0)  # a footer follows when flagged


_BITRATES = {  # kbit/s by (MPEG-1?, layer) and the header's index
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_RATES = {3: (44_100, 48_000, 32_000), 2: (22_050, 24_000, 16_000), 0: (11_025, 12_000, 8_000)}
_TAIL_TAGS = (b"TAG", b"APETAGEX", b"LYRICS")


class _Frame(NamedTuple):
    length: int
    samples: int
    rate: int
    side_info: int  # bytes of side information after the 4-byte header (layer III), where Xing sits


def _frame(data: bytes, at: int) -> _Frame | None:
    """The MPEG audio frame whose header is at ``at``; None where there is none."""
    if at + 4 > len(data) or data[at] != 0xFF or data[at + 1] & 0xE0 != 0xE0:
        return None
    version, layer_bits = (data[at + 1] >> 3) & 3, (data[at + 1] >> 1) & 3
    index, rate_index, padding = data[at + 2] >> 4, (data[at + 2] >> 2) & 3, (data[at + 2] >> 1) & 1
    if version == 1 or layer_bits == 0 or index in (0, 15) or rate_index == 3:
        return None  # reserved values, or "free" bitrate, whose frames have no length in their header
    layer, mpeg1 = 4 - layer_bits, version == 3
    bitrate = _BITRATES[(mpeg1, 1 if layer == 1 else 2 if not mpeg1 else layer)][index] * 1000
    rate = _RATES[version][rate_index]
    mono = data[at + 3] >> 6 == 3
    if layer == 1:
        return _Frame((12 * bitrate // rate + padding) * 4, 384, rate, 0)
    samples = 1152 if layer == 2 or mpeg1 else 576
    side = (17 if mono else 32) if mpeg1 else (9 if mono else 17)
    return _Frame(samples // 8 * bitrate // rate + padding, samples, rate, side if layer == 3 else 0)


def _mp3(data: bytes, start: int) -> float | None:
    first = _frame(data, start)
    end = start + first.length if first is not None else len(data) + 1
    if first is None or end > len(data) or (end < len(data) and _frame(data, end) is None):
        return None  # not MPEG audio, cut short, or a chance sync pattern (a real frame is followed by another)
    frames = _vbr_frames(data, start, first)
    if frames is not None:
        return frames * first.samples / first.rate
    at, seconds = start, 0.0
    while (frame := _frame(data, at)) is not None and at + frame.length <= len(data):
        seconds += frame.samples / frame.rate
        at += frame.length
    rest = data[at:]
    if len(rest) > 0 and not rest.startswith(_TAIL_TAGS):
        seconds += size_bound(len(rest)).seconds  # not frames: bounded, never taken as nothing
    return seconds


def _vbr_frames(data: bytes, start: int, first: _Frame) -> int | None:
    """The frame count a Xing / Info (LAME) or VBRI (Fraunhofer) header in the first frame gives."""
    xing = start + 4 + first.side_info
    if data[xing:xing + 4] in (b"Xing", b"Info") and data[xing + 7] & 1:
        return _u32(data, xing + 8)
    vbri = start + 4 + 32
    if data[vbri:vbri + 4] == b"VBRI":
        return _u32(data, vbri + 14)
    return None


__all__ = ["MAX_UPLOAD_BYTES", "MIN_BITRATE_BPS", "Duration", "audio_duration", "duration_bound", "size_bound"]
