"""The Open Inference Protocol (KServe v2) over gRPC: the generated message code, its codec and
the ``grpc.aio`` server that runs beside HTTP (see :mod:`.server`)."""
