"""providers agent package."""
