"""Amazon Polly as a speech synthesiser (``tts: polly``).

``synthesize_speech`` returns raw 16-bit mono PCM at the call's rate (8 or
16 kHz, no resampling needed); we wrap it in a WAV in the same prompt cache the
local TTS uses (key: provider ``polly``, voice, rate, the exact text or SSML
sent), so a greeting is paid for and waited for once, and FreeSWITCH plays it
with ``playback``. Replies with ``say-as`` markup (confirmation codes) go as
SSML so Polly spells them.

Engine: ``neural`` by default; a voice without a neural version answers
``EngineNotSupportedException`` and is remembered as standard-only.
Credentials and region come from the standard AWS chain; nothing is logged
but error codes (the text may hold a patient's name).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from esl_app.media.pcm import wav_bytes
from esl_app.providers.markup import to_plain, to_ssml
from esl_app.providers.tts.base import PlayInstruction, TtsCapabilities, TtsError
from esl_app.providers.tts.cache import DEFAULT_DIR, PromptCache

__all__ = ["PollyTts", "new_client"]

log = logging.getLogger(__name__)

_clients: dict[tuple[str, float], Any] = {}
_clients_lock = threading.Lock()


def new_client(region: str, timeout_s: float = 5.0) -> Any:
    """A Polly client with short timeouts (a prompt is small; waiting long is dead air)."""
    import boto3
    from botocore.config import Config

    return boto3.client("polly", region_name=region,
                        config=Config(read_timeout=timeout_s, connect_timeout=2.0,
                                      retries={"total_max_attempts": 2, "mode": "standard"}))


class PollyTts:
    """Polly behind the prompt cache (implements ``TtsProvider``)."""

    name = "polly"
    capabilities = TtsCapabilities(ssml=True, sample_rates=(8000, 16000))

    def __init__(self, region: str | None = None, *, cache: PromptCache | None = None,
                 cache_dir: str | Path = DEFAULT_DIR, client: Any = None,
                 engine: str = "neural", timeout_s: float = 5.0) -> None:
        """``client`` overrides the shared boto3 client (tests inject a stubbed one)."""
        from esl_app.providers.registry import aws_region

        self.region = region or aws_region()
        self.cache = cache or PromptCache(cache_dir)
        self._client = client
        self.engine = engine
        self.timeout_s = timeout_s
        self._standard_only: set[str] = set()
        self.requests = 0
        self.characters = 0  # billed characters (Polly's RequestCharacters)

    def _get_client(self) -> Any:
        if self._client is None:
            key = (self.region, self.timeout_s)
            with _clients_lock:
                if key not in _clients:
                    _clients[key] = new_client(self.region, self.timeout_s)
                self._client = _clients[key]
        return self._client

    def synthesize(self, text: str, *, voice: str, sample_rate: int,
                   language: str = "en-US") -> PlayInstruction:
        """Synthesise (or reuse) one sentence; returns a ``playback`` instruction."""
        plain, text_type, payload = self._request(text, sample_rate)

        def synth(_tmp: Path) -> bytes:
            return wav_bytes(self._pcm(payload, text_type, voice, sample_rate), sample_rate)

        prompt = self.cache.get_or_create(self.name, voice, sample_rate,
                                          f"{text_type}:{payload}", plain, synth)
        return PlayInstruction(app="playback", arg=str(prompt.path), text=plain,
                               duration_ms=self.cache.duration_ms(prompt.path),
                               cached=prompt.cached)

    def instant(self, text: str, *, voice: str, sample_rate: int,
                language: str = "en-US") -> PlayInstruction | None:
        """The cached prompt when playing it needs no wait, else None (never calls Polly)."""
        plain, text_type, payload = self._request(text, sample_rate)
        return self.cache.get_ready(self.name, voice, sample_rate, f"{text_type}:{payload}",
                                    plain)

    @staticmethod
    def _request(text: str, sample_rate: int) -> tuple[str, str, str]:
        """(plain text, Polly's TextType, the payload); TtsError for what Polly cannot say."""
        if sample_rate not in (8000, 16000):
            raise TtsError(f"unsupported sample rate {sample_rate}")
        plain = to_plain(text).strip()
        if not plain:
            raise TtsError("nothing to say")
        if "<say-as" in text:
            return plain, "ssml", to_ssml(text.strip())
        return plain, "text", text.strip()

    def _pcm(self, payload: str, text_type: str, voice: str, sample_rate: int) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        engine = "standard" if voice in self._standard_only else self.engine
        while True:
            try:
                self.requests += 1
                response = self._get_client().synthesize_speech(
                    Text=payload, TextType=text_type, VoiceId=voice, Engine=engine,
                    OutputFormat="pcm", SampleRate=str(sample_rate))
                stream = response["AudioStream"]
                try:
                    pcm = stream.read()
                finally:
                    stream.close()
                self.characters += int(response.get("RequestCharacters") or len(payload))
                break
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code == "EngineNotSupportedException" and engine != "standard":
                    log.info("polly voice %s has no %s engine; using standard", voice, engine)
                    self._standard_only.add(voice)
                    engine = "standard"
                    continue
                raise TtsError(f"polly error {code}") from exc
            except (BotoCoreError, OSError) as exc:
                raise TtsError(f"polly unavailable: {type(exc).__name__}") from exc
        if not pcm:
            raise TtsError("polly returned no audio")
        if len(pcm) % 2:
            pcm = pcm[:-1]
        return pcm
