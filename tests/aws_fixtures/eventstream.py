"""Build AWS event-stream responses with the SDKs' own encoders and feed them to botocore.

Payloads are serialised by botocore's RestJSONSerializer against the service
model's event shapes (so blobs are base64, timestamps ISO 8601, exactly as
the service sends them) and framed by amazon-transcribe's
EventStreamMessageSerializer (the same binary framing every AWS event stream
uses). The responses go through a ``before-send`` hook, so botocore's real
HTTP-response handling, event-stream decoder and parser all run.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import botocore.session
from amazon_transcribe.eventstream import EventStreamMessageSerializer
from botocore.awsrequest import AWSResponse
from botocore.serialize import RestJSONSerializer

FIXTURES = Path(__file__).resolve().parent
_framer = EventStreamMessageSerializer()


def load(name: str) -> Any:
    """A recorded fixture (JSON) from this folder."""
    return json.loads((FIXTURES / name).read_text())


@functools.cache
def _service_model(service: str):
    """Loading a model is CPU work; do it once, not inside every emulated call."""
    return botocore.session.get_session().get_service_model(service)


def event_shape(service: str, operation: str, event_type: str):
    model = _service_model(service)
    op = model.operation_model(operation)
    stream = op.get_event_stream_output()
    return stream.members[event_type]


def encode_event(service: str, operation: str, event_type: str, payload: dict) -> bytes:
    """One ``:message-type: event`` frame, its payload serialised from the model shape."""
    shape = event_shape(service, operation, event_type)
    body = RestJSONSerializer()._serialize_body_params(payload, shape)
    if isinstance(body, str):
        body = body.encode()
    return _framer.serialize({":message-type": "event", ":event-type": event_type,
                              ":content-type": "application/json"}, body)


def encode_exception(exception_type: str, message: str) -> bytes:
    """One ``:message-type: exception`` frame (e.g. ``throttlingException``)."""
    return _framer.serialize({":message-type": "exception", ":exception-type": exception_type,
                              ":content-type": "application/json"},
                             json.dumps({"message": message}).encode())


def bedrock_events(events: Iterable[dict]) -> list[bytes]:
    """Frames for a recorded ``invoke_agent`` completion: [{"chunk": {...}}, ...]."""
    frames = []
    for event in events:
        ((kind, payload),) = event.items()
        if kind == "exception":
            frames.append(encode_exception(payload["type"], payload["message"]))
        else:
            if kind == "chunk" and isinstance(payload.get("bytes"), str):
                payload = dict(payload, bytes=payload["bytes"].encode())
            frames.append(encode_event("bedrock-agent-runtime", "InvokeAgent", kind, payload))
    return frames


class FakeRaw:
    """The urllib3 response stand-in botocore reads event streams from."""

    def __init__(self, chunks: Sequence[bytes], fail: BaseException | None = None,
                 before_each: Callable[[], None] | None = None) -> None:
        self.chunks = list(chunks)
        self.fail = fail
        self.before_each = before_each
        self.closed = False

    def stream(self, *_a: Any, **_k: Any) -> Iterator[bytes]:
        for chunk in self.chunks:
            if self.before_each:
                self.before_each()
            yield chunk
        if self.fail is not None:
            raise self.fail

    def read(self, *_a: Any, **_k: Any) -> bytes:
        return b"".join(self.chunks)

    def close(self) -> None:
        self.closed = True


def stream_response(frames: Sequence[bytes], *, split: int = 0,
                    fail: BaseException | None = None,
                    before_each: Callable[[], None] | None = None) -> AWSResponse:
    """A 200 event-stream response; ``split`` cuts the bytes into pieces of that size."""
    data = b"".join(frames)
    chunks = ([data[i:i + split] for i in range(0, len(data), split)] if split
              else list(frames))
    return AWSResponse("https://fake.invalid", 200,
                       {"content-type": "application/vnd.amazon.eventstream",
                        "x-amzn-bedrock-agent-content-type": "application/json",
                        "x-amz-bedrock-agent-session-id": "s"},
                       FakeRaw(chunks, fail, before_each))


def error_response(status: int, code: str, message: str) -> AWSResponse:
    """An HTTP error as the service sends it (rest-json: x-amzn-ErrorType + JSON body)."""
    return AWSResponse("https://fake.invalid", status,
                       {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/",
                        "content-type": "application/json"},
                       FakeRaw([json.dumps({"message": message}).encode()]))


class Responder:
    """A ``before-send`` hook answering each request with the next scripted response.

    ``requests`` records the parsed JSON bodies botocore serialised (what would
    have gone to AWS). A script item may be a callable that raises (e.g. a
    botocore ReadTimeoutError) to model transport failures.
    """

    def __init__(self, client: Any, operation: str, script: Iterable[Any]) -> None:
        self.script = list(script)
        self.requests: list[dict] = []
        self.urls: list[str] = []
        service = client.meta.service_model.service_name
        client.meta.events.register(f"before-send.{service}.{operation}", self)

    def __call__(self, request: Any, **_kw: Any) -> AWSResponse:
        body = request.body
        if isinstance(body, bytes | bytearray):
            body = body.decode()
        self.requests.append(json.loads(body) if body else {})
        self.urls.append(request.url)
        item = self.script.pop(0)
        if callable(item):
            return item()
        return item
