"""The serving core: the agent's lifecycle, queue, worker loop and request path, the
fixed points features attach to (``feature``), health figures, config and supervision.
It imports no feature."""
