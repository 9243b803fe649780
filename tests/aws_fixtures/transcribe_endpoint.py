"""A local stand-in for the Transcribe streaming endpoint, at the SDK's HTTP-session seam.

Everything above the HTTP/2 transport is the real SDK: request serialisation,
SigV4 request and event signing, AudioEvent framing on the way in; the
event-stream decoder, TranscribeStreamingEventParser and
TranscriptResultStreamHandler on the way out. This fake replaces only
``AwsCrtHttpSessionManager`` (the awscrt HTTP/2 connection): it decodes the
signed audio frames the SDK writes and answers with recorded TranscriptEvent
frames, encoded by the SDK's own EventStreamMessageSerializer, timed by how
much audio it has received (like the service).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from amazon_transcribe.auth import StaticCredentialResolver
from amazon_transcribe.client import TranscribeStreamingClient
from amazon_transcribe.eventstream import EventStreamBuffer, EventStreamMessageSerializer
from amazon_transcribe.response import Response

_framer = EventStreamMessageSerializer()


def transcript_frame(results: list[dict]) -> bytes:
    return _framer.serialize(
        {":message-type": "event", ":event-type": "TranscriptEvent",
         ":content-type": "application/json"},
        json.dumps({"Transcript": {"Results": results}}).encode())


def exception_frame(exception_type: str, message: str) -> bytes:
    return _framer.serialize(
        {":message-type": "exception", ":exception-type": exception_type,
         ":content-type": "application/json"},
        json.dumps({"Message": message}).encode())


def result(result_id: str, text: str, partial: bool, start: float = 0.0,
           end: float = 0.5) -> dict:
    words = [{"Content": w, "Type": "pronunciation", "StartTime": start, "EndTime": end,
              "VocabularyFilterMatch": False, "Confidence": None if partial else 0.95,
              "Stable": not partial} for w in text.split()]
    return {"ResultId": result_id, "IsPartial": partial, "StartTime": start, "EndTime": end,
            "ChannelId": "ch_0", "Alternatives": [{"Transcript": text, "Items": words}]}


class FakeTranscribeEndpoint:
    """Script items: ``{"after_ms": N, "results": [...]}`` or ``{"after_ms": N,
    "exception": TYPE, "message": ...}`` or ``{"after_ms": N, "raw": "hex"}``; an item
    without ``after_ms`` is sent once the client ends its stream."""

    def __init__(self, script: list[dict], *, status: int = 200, error_type: str = "",
                 sample_rate: int = 8000) -> None:
        self.script = list(script)
        self.status = status
        self.error_type = error_type
        self.sample_rate = sample_rate
        self.requests: list[dict] = []
        self.audio = bytearray()
        self.audio_events = 0
        self.signed_frames = 0
        self.ended = False
        self.responses: list[_Response] = []

    @property
    def audio_ms(self) -> float:
        return len(self.audio) / (2 * self.sample_rate) * 1000

    async def make_request(self, url: str, method: str = "GET", headers: Any = None,
                           body: Any = None) -> _Response:
        self.requests.append({"url": url, "method": method, "headers": dict(headers or [])})
        response = _Response(self, body)
        self.responses.append(response)
        return response

    def client(self, region: str) -> TranscribeStreamingClient:
        """The client factory TranscribeStt takes: a real SDK client wired to this fake."""
        client = TranscribeStreamingClient(
            region=region, credential_resolver=StaticCredentialResolver("AKIDTEST", "secret"))
        client._session_manager = self
        return client


class _Response:
    def __init__(self, endpoint: FakeTranscribeEndpoint, body: Any) -> None:
        self.endpoint = endpoint
        self.body = body

    async def resolve_response(self) -> Response:
        ep = self.endpoint
        if ep.status != 200:
            return Response(ep.status, {"x-amzn-errortype": f"{ep.error_type}:"})
        return Response(200, {"x-amzn-request-id": "req-1",
                              "x-amzn-transcribe-sample-rate": str(ep.sample_rate),
                              "x-amzn-transcribe-language-code": "en-US",
                              "x-amzn-transcribe-media-encoding": "pcm"})

    async def consume_body(self) -> bytes:
        return json.dumps({"Message": "refused by the fake endpoint"}).encode()

    def _take_audio(self, outer: EventStreamBuffer) -> None:
        ep = self.endpoint
        for message in outer:
            ep.signed_frames += 1
            assert ":chunk-signature" in message.headers and ":date" in message.headers
            if not message.payload:
                ep.ended = True
                continue
            inner = EventStreamBuffer()
            inner.add_data(message.payload)
            for event in inner:
                assert event.headers[":event-type"] == "AudioEvent"
                ep.audio_events += 1
                ep.audio += event.payload

    async def chunks(self):
        ep = self.endpoint
        outer = EventStreamBuffer()
        while True:
            try:
                data = self.body.read()
            except BlockingIOError:
                data = None
            if data:
                outer.add_data(data)
                self._take_audio(outer)
            while ep.script and "after_ms" in ep.script[0] and \
                    ep.script[0]["after_ms"] <= ep.audio_ms:
                yield self._frame(ep.script.pop(0))
            if ep.ended:
                break
            if data is None:
                await asyncio.sleep(0.002)
        while ep.script:
            yield self._frame(ep.script.pop(0))

    @staticmethod
    def _frame(item: dict) -> bytes:
        if "exception" in item:
            return exception_frame(item["exception"], item.get("message", ""))
        if "raw" in item:
            return bytes.fromhex(item["raw"])
        return transcript_frame(item["results"])
