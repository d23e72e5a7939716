"""Host-side training: scikit-learn pipelines and Keras networks on tables, sensor windows
and images, plus `edgewise compare` (classical vs deep, measured through the edge code)."""
