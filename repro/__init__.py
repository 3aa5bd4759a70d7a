"""repro: a reproduction suite for efficient pooling in CNNs (Self-Attentive Pooling, RNNPool, Condensation-Net)."""

__version__ = "0.1.0"
