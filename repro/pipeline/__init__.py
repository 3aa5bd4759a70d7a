"""Glue between ``pipelines/*.yaml`` (the entries of every table), ``params.yaml`` and the DVC stages."""
