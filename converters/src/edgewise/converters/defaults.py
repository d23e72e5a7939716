"""The converters' defaults, in one place every converter reads them from."""

DEFAULT_VERSION = "1"
DEFAULT_TOLERANCE = 1e-4
DEFAULT_MAX_ACCURACY_DROP = 1.0  # points of accuracy (percent)
DEFAULT_CALIBRATION_SAMPLES = 200
