"""The DVC pipeline: ``params.yaml`` (:mod:`~repro.pipeline.params`), the stages (:mod:`~repro.pipeline.stages`) and
the generated ``dvc.yaml`` / ``pipelines/groups.yaml`` (:mod:`~repro.pipeline.dvcfile`). Only :mod:`repro.cli`
imports this package."""
