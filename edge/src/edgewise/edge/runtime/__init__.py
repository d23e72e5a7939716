"""A bundle served in-process: manifest, files, signature, runtime backends, decoding,
explanations, the self-test, drift profiles and roll-out packing. No MQTT, no threads:
this is what the host side (trainer, converters) imports."""
