"""Conditional VAEs (vae.models.conditional): the KL to p(z | y) against torch.distributions, the context read from
labels or float vectors, one-line errors for labels it cannot read and for priors or networks it cannot take, and the
per-class pictures. (A conditional model trained by the real Trainer on MNIST that uses its labels:
tests/integration/test_conditional_training.py.)"""

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from vae.core.errors import ConfigError
from vae.layers.likelihoods import Bernoulli
from vae.layers.nets.mlp import MLPNet
from vae.layers.priors import LearnedGaussian, StandardNormal, VampPrior
from vae.models import pictures
from vae.models.conditional import ConditionalVAE
from vae.models.hierarchical import HierarchicalVAE


def model(**arch) -> ConditionalVAE:
    torch.manual_seed(0)
    prior = arch.pop("prior", StandardNormal())
    return ConditionalVAE(
        image_shape=(1, 28, 28), context_size=10, latent_dim=4, network=MLPNet(hidden_dims=(32,)),
        likelihood=Bernoulli(), prior=prior, kl_estimator="auto", kl_samples=1, **arch,
    )  # fmt: skip


def test_the_kl_to_the_conditional_prior_equals_torch():
    cvae = model()
    with torch.no_grad():
        cvae.prior_net.weight.normal_()
        cvae.prior_net.bias.normal_()
    x, y = torch.rand(6, 1, 28, 28), torch.arange(6)
    out = cvae(x, context=y)
    q = cvae.posterior(x, torch.nn.functional.one_hot(y, 10).float())
    p = cvae.conditional_prior(torch.nn.functional.one_hot(y, 10).float())
    reference = kl_divergence(
        Independent(Normal(q.mean, (0.5 * q.logvar).exp()), 1), Independent(Normal(p.mean, (0.5 * p.logvar).exp()), 1)
    )
    torch.testing.assert_close(out.kl, reference, rtol=1e-5, atol=1e-5)
    assert not cvae.layers[0].kl_splits  # the prior depends on y: no split against one aggregate prior


def test_float_context_vectors_and_any_integer_labels_are_read():
    cvae = model()
    x = torch.rand(3, 1, 28, 28)
    one_hot = torch.nn.functional.one_hot(torch.tensor([1, 2, 3]), 10).float()
    torch.manual_seed(0)
    a = cvae(x, context=torch.tensor([1, 2, 3])).log_px
    for context in (one_hot, torch.tensor([1, 2, 3], dtype=torch.int32), torch.tensor([1, 2, 3], dtype=torch.uint8)):
        torch.manual_seed(0)
        torch.testing.assert_close(cvae(x, context=context).log_px, a)


def test_labels_it_cannot_read_are_one_line_errors():
    cvae = model()
    x = torch.rand(3, 1, 28, 28)
    for context, message in [
        (None, "needs the labels"),
        (torch.tensor([0, 1, 10]), "label 10 is outside the 10 classes"),
        (torch.tensor([0, 1]), "2 labels for 3 images"),
        (torch.zeros(3, 4), r"float context vectors \(b, 10\)"),
    ]:
        with pytest.raises(ConfigError, match=message):
            cvae(x, context=context)


def test_priors_that_cannot_condition_are_refused():
    with pytest.raises(ConfigError, match="pseudo-inputs have no label"):
        model(prior=VampPrior())
    with pytest.raises(ConfigError, match="set the model's conditional_prior to false"):
        model(prior=LearnedGaussian())
    with pytest.raises(ConfigError, match="ConditionalVAE's network must be an encoder/decoder pair") as error:
        ConditionalVAE(image_shape=(1, 28, 28), context_size=10, network=HierarchicalVAE(image_shape=(1, 28, 28)))
    assert "\n" not in str(error.value)
    assert model(prior=LearnedGaussian(), conditional_prior=False).prior_net is None


def test_class_samples_under_an_unconditional_prior_draw_from_that_prior():
    """With conditional_prior false, each column of the class grid decodes one z drawn from model.prior (here a
    learned Gaussian moved far from N(0, I)) under every label."""
    cvae = model(prior=LearnedGaussian(), conditional_prior=False).eval()
    with torch.no_grad():
        cvae.latent.prior.mean.fill_(3.0)
    grid = cvae.class_samples(nrow=4, seed=7)
    with torch.random.fork_rng():
        torch.manual_seed(7)
        z = cvae.latent.sample_prior(4, encode=cvae.no_encode)
    y = torch.nn.functional.one_hot(torch.arange(10).repeat_interleave(4), 10)
    want = cvae.decode_given(z.repeat(10, 1), y)
    plain = pictures.grid(want, 4)  # the labelled picture holds it at its top left, the rows' names beside it
    torch.testing.assert_close(grid[:, : plain.shape[1], : plain.shape[2]], plain)
    assert z.mean().item() > 1.0  # far from N(0, I)'s draws: ε alone would give a different picture


def test_unlabelled_data_and_bad_context_sizes_are_refused_in_one_line():
    """A conditional model needs the data's number of classes (its context size): data without labels (None) cannot
    train it, and a context size must be positive."""
    for context_size, message in [
        (None, r"needs labelled data .*\(context_size None\)"),
        (0, "context_size must be a positive integer or None, got 0"),
    ]:
        with pytest.raises(ConfigError, match=message) as error:
            ConditionalVAE(image_shape=(1, 28, 28), context_size=context_size, network=MLPNet(hidden_dims=(8,)))
        assert "\n" not in str(error.value)
