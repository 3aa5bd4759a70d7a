"""Detection: detector assembly, box handling and test-time protocols (see docs/face_detection.md)."""
