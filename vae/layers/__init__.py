"""The parts models are made of: likelihoods p(x|z), priors p(z), latent layers and encoder/decoder networks.

vae.layers.likelihoods   Bernoulli, Gaussian, DiscretizedLogistic, DiscretizedLogisticMixture
vae.layers.priors        StandardNormal, LearnedGaussian, LearnedFullGaussian, GaussianMixture, VampPrior
vae.layers.posteriors    DiagonalGaussian, FullCovariance: the families of q(z|x)
vae.layers.flows         Planar, Sylvester, IAF: flow posteriors, log q carried with each draw
vae.layers.nets          ConvNet, ResNet, MLPNet, LinearNet
vae.layers.latents       GaussianLatent, TopDownLatent: each owns its posterior head, its prior and its KL
vae.layers.discrete      CategoricalLatent, BernoulliLatent (Gumbel-softmax relaxation, exact KL)
"""
