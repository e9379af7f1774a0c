"""Build-time converter: traffic synthesis, datasets, training, int8 quantisation, evaluation."""
