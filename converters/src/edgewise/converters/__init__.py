"""Host-side conversion of trained models into edge bundles: scikit-learn to ONNX, Keras
to TFLite (float32, float16, dynamic range, full int8) or ONNX, each behind a parity gate."""
