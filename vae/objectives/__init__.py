"""Training objectives: the ELBO under a KL weighting (with a disentangling penalty), and the IWAE bound."""
