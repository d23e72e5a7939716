"""Host-side conversion of trained models into edge bundles (ONNX now, TFLite later)."""
