"""Detection on SAP backbones and the face detectors' machinery: anchors placed by the real output strides, box
coding, matching, losses, post-processing and detector assembly on torchvision's detectors (docs/detection.md), and
the face detectors' test-time protocols (docs/face_detection.md).

``build_detector(detector, arch, num_classes, image_size, **options)`` builds Faster R-CNN + FPN, SSD(lite) or YOLOv3
on any SAP backbone of the official detection configs.
"""

from repro.detection.backbone import DetectorError
from repro.detection.builders import DETECTORS, build_detector, detector_record, official_compat

__all__ = ["DETECTORS", "DetectorError", "build_detector", "detector_record", "official_compat"]
