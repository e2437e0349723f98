"""The application layer: what the ``visec`` command runs on top of the library.

``bench`` (the forgery bench and the bench-job machinery), ``bench_ancra`` and ``bench_tit`` (the
per-method bench jobs), ``attack`` (``visec attack``) and ``tit_cli`` (``visec tit ...``). Nothing
below this layer imports it; bench jobs reach the registry through the package's entry points.
"""
