"""Experiments that train for real on the CPU: RNNPool Table 7 (App. C.1), the App. C.2 single-operator probes and
the pooling shoot-out. Each exposes one entry function ``run_<name>(settings, out_dir, *, progress)`` that takes the
plain settings mapping of ``params.yaml`` and writes its records, tables and plots into ``out_dir``.

Layering: above ``engine``, below ``tables``; this package imports ``data``, ``models``, ``layers``, ``metrics`` and
``engine``, never ``tables``, ``pipeline`` or ``cli``.
"""
