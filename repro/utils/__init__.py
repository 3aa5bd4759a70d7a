"""Small shared helpers with no torch dependency at import time: atomic writes, provenance, registries."""
