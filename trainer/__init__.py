"""Host-side training: scikit-learn pipelines (and Keras networks, later) on tabular data."""
