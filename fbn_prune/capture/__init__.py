"""Running the model on calibration text and recording each FFN neuron's activity."""
