"""The parts models are made of: likelihoods p(x|z), priors p(z), latent layers and encoder/decoder networks."""
