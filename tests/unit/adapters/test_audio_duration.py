"""The duration of an audio upload read from its header: WAV files written by the standard library's
``wave``, and FLAC, MP3, Ogg and MP4 headers built here byte by byte as their specifications lay them
out; anything unreadable is None, and the bound by size is never less than the audio at 6 kbit/s."""

from __future__ import annotations

import io
import struct
import wave

import pytest

from costwarden.adapters.audio_duration import (
    MIN_BITRATE_BPS,
    Duration,
    audio_duration,
    duration_bound,
    size_bound,
)


def wav(seconds: float, rate: int = 16_000, channels: int = 1, width: int = 2) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(bytes(width * channels * round(seconds * rate)))
    return out.getvalue()


@pytest.mark.parametrize(("seconds", "rate", "channels", "width"), [(1.0, 16_000, 1, 2), (12.34, 44_100, 2, 2),
                                                                     (0.5, 8_000, 1, 1), (3.0, 48_000, 2, 3)])
def test_a_wav_file_lasts_its_data_over_its_byte_rate(seconds: float, rate: int, channels: int, width: int) -> None:
    assert audio_duration(wav(seconds, rate, channels, width)) == Duration(pytest.approx(seconds, abs=1e-4), "wav")


def test_a_wav_chunk_before_the_data_is_skipped_and_a_streamed_size_counts_the_bytes_present() -> None:
    data = wav(2.0)
    fmt_end = 12 + 8 + 16
    listed = data[:fmt_end] + b"LIST" + struct.pack("<I", 5) + b"INFO!" + b"\x00" + data[fmt_end:]  # odd: padded
    assert audio_duration(listed) == Duration(2.0, "wav")
    streamed = data[:fmt_end + 4] + struct.pack("<I", 0xFFFFFFFF) + data[fmt_end + 8:]  # size unknown when written
    assert audio_duration(streamed) == Duration(2.0, "wav")
    assert audio_duration(streamed[:-16_000]) == Duration(1.5, "wav")  # cut short: what is there


def flac(rate: int, samples: int, *, id3: bytes = b"") -> bytes:
    bits = rate << 44 | (2 - 1) << 41 | (16 - 1) << 36 | samples  # rate, channels-1, bps-1, total samples
    streaminfo = struct.pack(">HH", 4096, 4096) + b"\x00" * 6 + bits.to_bytes(8, "big") + b"\x00" * 16
    return id3 + b"fLaC" + bytes([0x80]) + len(streaminfo).to_bytes(3, "big") + streaminfo + b"\xff\xf8" * 100


def test_a_flac_file_lasts_its_total_samples_over_its_rate() -> None:
    assert audio_duration(flac(44_100, 441_000)) == Duration(10.0, "flac")
    assert audio_duration(flac(48_000, 72_000, id3=id3v2(20))) == Duration(1.5, "flac")
    assert audio_duration(flac(44_100, 0)) is None  # "unknown": the size decides


def id3v2(size: int) -> bytes:
    synchsafe = bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0))
    return b"ID3\x04\x00\x00" + synchsafe + b"\x00" * size


MP3_HEADER = b"\xff\xfb\x90\x64"  # MPEG-1 layer III, 128 kbit/s, 44.1 kHz, no padding, joint stereo
MP3_FRAME = 144 * 128_000 // 44_100  # 417 bytes
FRAME_S = 1152 / 44_100


def mp3(frames: int, *, xing_frames: int | None = None) -> bytes:
    first = MP3_HEADER + b"\x00" * 32
    if xing_frames is not None:
        first += b"Xing" + struct.pack(">II", 1, xing_frames)
    first += b"\x00" * (MP3_FRAME - len(first))
    return first + (MP3_HEADER + b"\x00" * (MP3_FRAME - 4)) * (frames - 1)


def test_an_mp3_file_lasts_its_frames_each_walked() -> None:
    assert audio_duration(mp3(100)) == Duration(pytest.approx(100 * FRAME_S), "mp3")
    assert audio_duration(id3v2(300) + mp3(10) + b"TAG" + b"\x00" * 125) == Duration(pytest.approx(10 * FRAME_S), "mp3")


def test_an_mp3_files_xing_frame_count_is_taken_and_what_follows_its_frames_is_bounded() -> None:
    assert audio_duration(mp3(5, xing_frames=1000)) == Duration(pytest.approx(1000 * FRAME_S), "mp3")
    tail = b"\x01" * 750  # not a frame nor a tag: one second at 6 kbit/s
    assert audio_duration(mp3(10) + tail) == Duration(pytest.approx(10 * FRAME_S + 1.0), "mp3")


def ogg_page(granule: int, packet: bytes, sequence: int) -> bytes:
    return (b"OggS\x00" + bytes([2 if sequence == 0 else 0]) + struct.pack("<qII", granule, 1, sequence)
            + b"\x00\x00\x00\x00" + bytes([1, len(packet)]) + packet)


def test_an_ogg_file_lasts_its_last_granule_over_its_rate() -> None:
    opus = ogg_page(0, b"OpusHead\x01\x02" + struct.pack("<HI", 312, 48_000) + b"\x00\x00\x00", 0)
    assert audio_duration(opus + ogg_page(48_000 * 5 + 312, b"x" * 40, 1)) == Duration(5.0, "ogg")
    vorbis = ogg_page(0, b"\x01vorbis" + struct.pack("<IBI", 0, 2, 22_050) + b"\x00" * 13, 0)
    pages = vorbis + ogg_page(22_050 * 3, b"y" * 30, 1) + ogg_page(-1, b"z" * 10, 2)  # -1: no packet ends there
    assert audio_duration(pages) == Duration(3.0, "ogg")


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


@pytest.mark.parametrize("version", [0, 1])
def test_an_mp4_file_lasts_its_movie_headers_duration(version: int) -> None:
    if version == 0:
        mvhd = bytes([0, 0, 0, 0]) + struct.pack(">IIII", 0, 0, 1000, 4500) + b"\x00" * 80
    else:
        mvhd = bytes([1, 0, 0, 0]) + struct.pack(">QQIQ", 0, 0, 600, 2700) + b"\x00" * 80
    m4a = box(b"ftyp", b"M4A \x00\x00\x00\x00") + box(b"mdat", b"\x00" * 5000) + box(b"moov", box(b"mvhd", mvhd))
    assert audio_duration(m4a) == Duration(4.5, "mp4")


@pytest.mark.parametrize("data", [b"", b"RIFF\x00\x00\x00\x00WAVEfmt ", b"\x1aE\xdf\xa3webm" + b"\x00" * 100,
                                  b"fLaC\x00\x00", MP3_HEADER, b"OggS" + b"\x00" * 10, b"\x00\x00\x00\x08ftyp",
                                  b"\xff\xfb\x90\x64" + b"\x00" * 10 + b"junk"])
def test_an_unreadable_header_is_none_and_bounded_by_its_size(data: bytes) -> None:
    assert audio_duration(data) is None
    bound = duration_bound(data)
    assert bound == Duration(len(data) * 8 / MIN_BITRATE_BPS, "size") and not bound.exact


def test_the_size_bound_holds_any_audio_at_6_kbits_or_more() -> None:
    assert size_bound(750) == Duration(1.0, "size")
    assert size_bound(25 * 1024 * 1024).seconds == pytest.approx(34_952.5, abs=0.1)  # 25 MB: 9.7 hours at most
    wav_file = wav(4.0, 8_000, 1, 1)  # 64 kbit/s: its bound is far longer than it is
    assert duration_bound(wav_file) == Duration(4.0, "wav") and size_bound(len(wav_file)).seconds > 40
