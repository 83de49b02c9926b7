"""The servers the benchmark runs beside this service, each started in the peers' own
environment as ``python -m loadtest.peers.<module> MODEL.onnx --port PORT``.

Standard library only here: the peers import nothing of the service.
"""
