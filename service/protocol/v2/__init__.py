"""The Open Inference Protocol (KServe v2) over HTTP: its codec and its endpoints."""
