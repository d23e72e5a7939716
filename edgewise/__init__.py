"""edgewise: train on a host, convert to edge bundles, serve on devices over MQTT.

Installed, the repository's top-level folders are this package's sub-packages
(``edgewise.edge``, ``edgewise.trainer``, ``edgewise.converters``, ``edgewise.deploy``;
pyproject's package-dir). In a source checkout they sit beside this folder, and the package
looks there too, so a clone runs its own code whichever venv runs it.
"""

from pathlib import Path as _Path

__version__ = "0.1.0"

_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "edge" / "agent.py").is_file():
    __path__.append(str(_checkout))
