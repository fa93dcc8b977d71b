"""Finding the functional networks: ICA of each layer's neuron signals, run as parallel jobs."""
