"""One module per DVC stage (``dvc.yaml``): ``prepare``, ``profile``, ``train``, ``tables``. Each exposes ``run(...)``,
called by ``repro stage <name>`` (:mod:`repro.cli`); what a stage writes is a :mod:`repro.records` record."""
