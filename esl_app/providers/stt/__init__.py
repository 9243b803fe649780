"""providers stt package."""
