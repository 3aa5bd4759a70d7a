"""Pooling layers. Importing this package registers every pool with :func:`create_pool`."""

from repro.layers.create_pool import create_pool, list_pools, register_pool
from repro.layers.pool_base import WeightedPool2d

# Each pooling family registers itself on import (one import line per file).
# -- pool modules --
# isort: split
from repro.layers import attn_pool as attn_pool
from repro.layers import cross_channel as cross_channel
from repro.layers import deform as deform
from repro.layers import dynamic_conv as dynamic_conv
from repro.layers import gaussian_pool as gaussian_pool
from repro.layers import lip as lip
from repro.layers import nlp as nlp
from repro.layers import pos_embed as pos_embed
from repro.layers import rnnpool as rnnpool
from repro.layers import softpool as softpool
from repro.layers import standard as standard

__all__ = ["WeightedPool2d", "create_pool", "list_pools", "register_pool"]
