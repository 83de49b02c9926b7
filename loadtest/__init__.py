"""Load generation and benchmarks of the service: ``python -m loadtest`` runs the side-by-side
benchmark, ``python -m loadtest.run_locust`` the locust load, ``python -m
loadtest.bench_distributions`` the post-processor benchmark.

Kept free of imports: the peers' environment imports ``loadtest.peers`` through this package
and has neither the service's nor the training's dependencies.
"""
