"""repro: a reproduction suite for efficient pooling in CNNs (Self-Attentive Pooling, RNNPool, Condensation-Net)."""

from repro.utils.openmp import prefer_passive_wait

prefer_passive_wait()  # before torch is imported; OMP_WAIT_POLICY=ACTIVE in the environment keeps spinning threads

__version__ = "0.1.0"
