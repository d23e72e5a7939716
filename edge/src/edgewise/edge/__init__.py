"""edgewise device side: load bundles, run them with ONNX Runtime or LiteRT, serve over MQTT.

This package imports only numpy, a runtime and paho-mqtt (and those lazily), never the
host libraries (TensorFlow, Keras, scikit-learn, onnx).
"""

__version__ = "0.1.0"
