"""Model zoo. Importing this package registers every named model; SAP grammar names are built on demand."""

from repro.models.registry import build_model, is_registered, list_models, register_model

# Model families register themselves on import (one import line per file).
# -- model modules --
# isort: split
from repro.models import condensation as condensation
from repro.models import face_detection as face_detection
from repro.models import rnnpool_classifiers as rnnpool_classifiers
from repro.models import rnnpool_mobilenet as rnnpool_mobilenet
from repro.models import sap as sap  # the SAP grammar zoo (ResNet, ResNeXt, MobileNetV2/V3); nothing to register

__all__ = ["build_model", "is_registered", "list_models", "register_model"]
