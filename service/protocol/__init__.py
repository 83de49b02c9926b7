"""HTTP: the native and Open Inference Protocol routes, request decoding, response encoding."""
