"""Model zoo. Importing this package registers every named model and the SAP grammar's resolver."""

from repro.models.registry import build_model, is_registered, list_models, model_defaults, register_model

# Model families register themselves on import (one import line per file).
# -- model modules --
# isort: split
from repro.models import condensation as condensation
from repro.models import face_detection as face_detection
from repro.models import rnnpool_classifiers as rnnpool_classifiers
from repro.models import rnnpool_mobilenet as rnnpool_mobilenet
from repro.models import sap as sap  # the SAP grammar (ResNet, ResNeXt, MobileNetV2/V3), registered as a resolver

__all__ = ["build_model", "is_registered", "list_models", "model_defaults", "register_model"]
