"""Sensor streams (docs/streams.md): the user's own sensors bound to a model, a feature
of the agent. Sources (MQTT topics, programs, serial ports, cameras), assembly (rows,
windows, images), and ``edgewise record``. Imports the core, the link and the runtime,
no other feature."""
