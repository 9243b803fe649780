"""A prompt's text inside its WAV (RIFF INFO comment): written once, read back, ignored by
WAV readers, and the emulator reports it as what the bot said."""

from __future__ import annotations

import subprocess
import wave

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esl_app.media.pcm import append_wav_text, wav_bytes, wav_duration_ms, wav_text, wav_with_text
from esl_app.sim.emulator.channel import _text_for


def _audio(path):
    with wave.open(str(path), "rb") as w:
        return w.getframerate(), w.getnframes(), w.readframes(w.getnframes())


def test_text_rides_after_the_audio_and_wav_readers_skip_it(tmp_path):
    pcm = bytes(range(256)) * 25  # 6400 bytes: 400 ms at 8 kHz
    plain = tmp_path / "plain.wav"
    plain.write_bytes(wav_bytes(pcm, 8000))
    tagged = tmp_path / "tagged.wav"
    tagged.write_bytes(wav_with_text(wav_bytes(pcm, 8000), "Your code is K7M-4Q2."))
    assert wav_text(tagged) == "Your code is K7M-4Q2."
    assert wav_text(plain) is None
    assert _audio(tagged) == _audio(plain) == (8000, 3200, pcm)
    assert wav_duration_ms(tagged) == 400
    data = tagged.read_bytes()
    assert int.from_bytes(data[4:8], "little") == len(data) - 8  # the RIFF size covers it


def test_sox_reads_the_audio_alone(tmp_path):
    path = tmp_path / "p.wav"
    path.write_bytes(wav_with_text(wav_bytes(bytes(1600), 8000), "Thank you for calling."))
    out = subprocess.run(["soxi", "-s", str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "800"


def test_append_to_a_file_another_program_wrote(tmp_path):
    path = tmp_path / "espeak.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "hello there"], check=True)
    before = _audio(path)
    assert append_wav_text(path, "hello there") is True
    assert wav_text(path) == "hello there" and _audio(path) == before


def test_odd_sized_files_keep_chunks_on_even_offsets(tmp_path):
    # 8-bit audio with an odd sample count, written without RIFF's pad byte
    odd = bytearray(wav_bytes(b"\x80\x80\x80", 8000))
    odd[32:36] = (1).to_bytes(2, "little") + (8).to_bytes(2, "little")  # align 1, 8 bits
    odd = bytes(odd)
    assert len(odd) % 2 == 1
    path = tmp_path / "odd.wav"
    path.write_bytes(wav_with_text(odd, "x"))
    assert wav_text(path) == "x"
    path.write_bytes(odd)
    assert append_wav_text(path, "y") and wav_text(path) == "y"
    with wave.open(str(path), "rb") as w:
        assert w.getnframes() == 3


@pytest.mark.parametrize("content", [b"", b"RIFF", b"not a wav at all" * 10,
                                     b"RIFF\xff\xff\xff\xffWAVELIST\xff\xff\xff\x7f",
                                     b"RIFF\x20\x00\x00\x00WAVELIST\x08\x00\x00\x00INFOICMT"])
def test_foreign_or_truncated_files_have_no_text(tmp_path, content):
    path = tmp_path / "odd.wav"
    path.write_bytes(content)
    assert wav_text(path) is None
    assert append_wav_text(path, "t") is False or content[:4] == b"RIFF"
    assert wav_with_text(content, "t") == content or content[:4] == b"RIFF"


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_characters="\x00",
                                           blacklist_categories=("Cs",)), max_size=300),
       samples=st.integers(min_value=0, max_value=500))
def test_any_sentence_round_trips(tmp_path_factory, text, samples):
    path = tmp_path_factory.mktemp("w") / "p.wav"
    path.write_bytes(wav_with_text(wav_bytes(bytes(2 * samples), 16000), text))
    assert wav_text(path) == text
    with wave.open(str(path), "rb") as w:
        assert w.getnframes() == samples


def test_the_emulator_reports_the_text_in_the_wav_before_a_text_file(tmp_path):
    path = tmp_path / "p.wav"
    path.write_bytes(wav_with_text(wav_bytes(bytes(160), 8000), "  In the WAV.  "))
    (tmp_path / "p.wav.txt").write_text("Beside it.")
    assert _text_for(str(path)) == "In the WAV."
    legacy = tmp_path / "legacy.wav"
    legacy.write_bytes(wav_bytes(bytes(160), 8000))
    (tmp_path / "legacy.wav.txt").write_text("Beside it.\n")
    assert _text_for(str(legacy)) == "Beside it."
    assert _text_for(str(tmp_path / "missing.wav")) == ""


def test_the_emulator_reads_a_prompt_once_until_the_file_changes(tmp_path, monkeypatch):
    from esl_app.sim.emulator import channel

    path = tmp_path / "p.wav"
    path.write_bytes(wav_with_text(wav_bytes(bytes(1600), 8000), "Hello there."))
    opened: list[str] = []
    real = channel.wav_duration
    monkeypatch.setattr(channel, "wav_duration", lambda p: opened.append(p) or real(p))
    assert channel.prompt_info(str(path)) == (0.1, "Hello there.")
    assert channel.prompt_info(str(path)) == (0.1, "Hello there.")
    assert len(opened) == 1  # the second playback of the same file reads nothing
    path.write_bytes(wav_with_text(wav_bytes(bytes(3200), 8000), "Changed."))
    assert channel.prompt_info(str(path)) == (0.2, "Changed.")  # rewritten: read again
    assert len(opened) == 2
    assert channel.prompt_info(str(tmp_path / "missing.wav")) is None
    assert channel.prompt_info(str(tmp_path)) is None  # a directory is not a prompt
    assert channel.prompt_info("bad\0path.wav") is None
