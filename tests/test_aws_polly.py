"""PollyTts against moto (which implements synthesize_speech) and botocore's Stubber."""

from __future__ import annotations

import io
import wave

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from moto import mock_aws

from esl_app.media.pcm import wav_text
from esl_app.providers.markup import say_characters
from esl_app.providers.tts.base import TtsError
from esl_app.providers.tts.cache import PromptCache
from esl_app.providers.tts.polly import PollyTts, new_client


@pytest.fixture(autouse=True)
def fake_aws(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def pcm_body(n_samples: int) -> StreamingBody:
    data = b"\x10\x00" * n_samples
    return StreamingBody(io.BytesIO(data), len(data))


def test_moto_round_trip_writes_wav_and_text(tmp_path):
    with mock_aws():
        tts = PollyTts("us-east-1", cache=PromptCache(tmp_path), client=new_client("us-east-1"))
        play = tts.synthesize("Thank you for calling.", voice="Joanna", sample_rate=8000)
    assert play.app == "playback" and play.text == "Thank you for calling."
    assert not play.cached
    with wave.open(play.arg) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
    assert wav_text(play.arg) == "Thank you for calling."
    assert str(tmp_path) in play.arg


def stubbed(tmp_path):
    client = boto3.client("polly", region_name="us-east-1")
    return PollyTts("us-east-1", cache=PromptCache(tmp_path), client=client), Stubber(client)


def test_request_shape_cache_and_ssml(tmp_path):
    tts, stub = stubbed(tmp_path)
    stub.add_response("synthesize_speech",
                      {"AudioStream": pcm_body(16000), "ContentType": "audio/pcm",
                       "RequestCharacters": 22},
                      {"Text": "Thank you for calling.", "TextType": "text", "VoiceId": "Joanna",
                       "Engine": "neural", "OutputFormat": "pcm", "SampleRate": "16000"})
    code = say_characters("K7M-4Q2")
    stub.add_response("synthesize_speech",
                      {"AudioStream": pcm_body(8000), "ContentType": "audio/pcm"},
                      {"Text": '<speak>Your code is <say-as interpret-as="characters">'
                               'K7M-4Q2</say-as>.</speak>',
                       "TextType": "ssml", "VoiceId": "Joanna", "Engine": "neural",
                       "OutputFormat": "pcm", "SampleRate": "16000"})
    with stub:
        first = tts.synthesize("Thank you for calling.", voice="Joanna", sample_rate=16000)
        again = tts.synthesize("Thank you for calling.", voice="Joanna", sample_rate=16000)
        spelled = tts.synthesize(f"Your code is {code}.", voice="Joanna", sample_rate=16000)
        stub.assert_no_pending_responses()
    assert first.duration_ms == 1000 and not first.cached
    assert again.cached and again.arg == first.arg
    assert spelled.text == "Your code is K7M-4Q2."
    assert tts.requests == 2 and tts.characters == 22 + len(
        '<speak>Your code is <say-as interpret-as="characters">K7M-4Q2</say-as>.</speak>')


def test_neural_not_supported_falls_back_to_standard(tmp_path):
    tts, stub = stubbed(tmp_path)
    stub.add_client_error("synthesize_speech", "EngineNotSupportedException",
                          "This voice does not support the selected engine", 400,
                          expected_params={"Text": "Hello.", "TextType": "text",
                                           "VoiceId": "Ivy", "Engine": "neural",
                                           "OutputFormat": "pcm", "SampleRate": "8000"})
    for text in ("Hello.", "Goodbye."):
        stub.add_response("synthesize_speech",
                          {"AudioStream": pcm_body(800), "ContentType": "audio/pcm"},
                          {"Text": text, "TextType": "text", "VoiceId": "Ivy",
                           "Engine": "standard", "OutputFormat": "pcm", "SampleRate": "8000"})
    with stub:
        tts.synthesize("Hello.", voice="Ivy", sample_rate=8000)
        tts.synthesize("Goodbye.", voice="Ivy", sample_rate=8000)  # remembered: one call
        stub.assert_no_pending_responses()


@pytest.mark.parametrize("code,status", [("ThrottlingException", 400),
                                         ("ServiceFailureException", 500),
                                         ("InvalidSsmlException", 400)])
def test_errors_become_tts_error_and_nothing_is_cached(tmp_path, code, status):
    tts, stub = stubbed(tmp_path)
    stub.add_client_error("synthesize_speech", code, "nope", status, expected_params=None)
    with stub, pytest.raises(TtsError, match=code):
        tts.synthesize("Hello.", voice="Joanna", sample_rate=8000)
    assert list(tmp_path.glob("*.wav")) == []


def test_empty_audio_and_bad_rate(tmp_path):
    tts, stub = stubbed(tmp_path)
    stub.add_response("synthesize_speech",
                      {"AudioStream": pcm_body(0), "ContentType": "audio/pcm"}, None)
    with stub, pytest.raises(TtsError):
        tts.synthesize("Hello.", voice="Joanna", sample_rate=8000)
    with pytest.raises(TtsError):
        tts.synthesize("Hello.", voice="Joanna", sample_rate=22050)
    with pytest.raises(TtsError):
        tts.synthesize("   ", voice="Joanna", sample_rate=8000)


def test_instant_gives_only_a_cached_prompt_and_never_calls_polly(tmp_path):
    """``instant`` is the call's no-wait path: a miss is None (no request), a hit the
    same playback ``synthesize`` gives, SSML included."""
    tts, stub = stubbed(tmp_path)
    code = say_characters("K7M-4Q2")
    stub.add_response("synthesize_speech",
                      {"AudioStream": pcm_body(8000), "ContentType": "audio/pcm"},
                      {"Text": '<speak>Your code is <say-as interpret-as="characters">'
                               'K7M-4Q2</say-as>.</speak>',
                       "TextType": "ssml", "VoiceId": "Joanna", "Engine": "neural",
                       "OutputFormat": "pcm", "SampleRate": "8000"})
    with stub:
        assert tts.instant(f"Your code is {code}.", voice="Joanna", sample_rate=8000) is None
        made = tts.synthesize(f"Your code is {code}.", voice="Joanna", sample_rate=8000)
        ready = tts.instant(f"Your code is {code}.", voice="Joanna", sample_rate=8000)
        stub.assert_no_pending_responses()
    assert tts.requests == 1
    assert ready is not None and ready.cached
    assert (ready.app, ready.arg, ready.text, ready.duration_ms) == (
        made.app, made.arg, "Your code is K7M-4Q2.", 1000)
    assert tts.instant(f"Your code is {code}.", voice="Matthew", sample_rate=8000) is None
    with pytest.raises(TtsError):
        tts.instant("Hello.", voice="Joanna", sample_rate=22050)
