"""The native JSON API: its codec and its endpoints."""
