"""edgewise: train on a host, convert to edge bundles, serve on devices over MQTT."""

__version__ = "0.1.0"
