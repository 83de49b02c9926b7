"""Serving runtime: feature decoding, sessions and batching; knows nothing of HTTP."""
