"""The applications built on the filter library: the command line (``vsrife``), ``vsrife smooth``, the
benchmark, the quality report, the sample clips and the upstream reference used by the benchmark and the
tests. The library (:mod:`vsrife`) never imports from here."""
