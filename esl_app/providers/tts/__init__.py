"""providers tts package."""
