"""Conditional VAEs (vae.models.conditional): the KL to p(z | y) against torch.distributions, a conditional model
trained
by the real Trainer on MNIST that uses its labels (its ELBO falls when the labels are shuffled, and its samples
follow their label), log p(x | y), and one-line errors for labels it cannot read."""

from functools import partial

import pytest
import pytorch_lightning as pl
import torch
from torch.distributions import Independent, Normal, kl_divergence

from vae.core.errors import ConfigError
from vae.data.embedded import EmbeddedMNIST
from vae.layers.likelihoods import Bernoulli
from vae.layers.nets.mlp import MLPNet
from vae.layers.priors import LearnedGaussian, StandardNormal, VampPrior
from vae.metrics.likelihood import evaluate, importance_weighted_log_likelihood
from vae.models import pictures
from vae.models.conditional import Conditional, ConditionalVAE
from vae.models.hierarchical import TopDown
from vae.training.module import VAEModule


def model(**arch) -> ConditionalVAE:
    torch.manual_seed(0)
    prior = arch.pop("prior", StandardNormal())
    return Conditional(network=MLPNet(hidden_dims=(32,)), **arch).build(
        image_shape=(1, 28, 28), latent_dim=4, likelihood=Bernoulli(), prior=prior, kl_estimator="auto", kl_samples=1
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A conditional VAE (MLP, 8 latent dimensions, p(z | y) learned) trained by the real Trainer for 3 epochs (120
    steps, Adam at 3e-3) on the 4,000 training digits of MNIST-5k: the training module hands it the labels."""
    torch.manual_seed(0)
    network = Conditional(network=MLPNet(hidden_dims=(128,)), classes=10)
    module = VAEModule(latent_dim=8, network=network, optimizer=partial(torch.optim.Adam, lr=3e-3))
    data = EmbeddedMNIST(batch_size=100, binarize="static")
    trainer = pl.Trainer(
        max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path_factory.mktemp("cvae"), limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    data.setup("test")
    return module.vae.eval(), data


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


def test_the_conditional_elbo_uses_the_label(trained):
    """The trained model's ELBO on the test digits is clearly higher with their own labels than with the labels
    shuffled, and so is its importance-weighted log p(x | y): a model that ignored y would score both the same."""
    cvae, data = trained
    x, y = next(iter(data.test_dataloader()))
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]
    assert (shuffled != y).float().mean() > 0.8
    numbers = {}
    with torch.no_grad():
        for name, labels in (("true", y), ("shuffled", shuffled)):
            torch.manual_seed(0)  # the same noise for both: a model that ignored y would give equal numbers
            numbers[f"elbo_{name}"] = cvae(x, context=labels).log_w()[0].mean()
            numbers[f"iw_{name}"] = importance_weighted_log_likelihood(cvae, x, num_samples=50, context=labels).mean()
    assert numbers["elbo_true"] - numbers["elbo_shuffled"] > 2.0  # nats per digit, after 120 steps
    assert numbers["iw_true"] - numbers["iw_shuffled"] > 2.0
    assert numbers["iw_true"] > numbers["elbo_true"] - 1.0  # the bound tightens with K (up to noise)


def test_samples_follow_their_label(trained):
    """32 samples per digit, the same noise for every label, each classified by its nearest class-mean image of the
    training digits: most land on their own label. A model that ignored the label would draw the same images for
    every label and score exactly 1/10; one that mixed the labels up would score below it."""
    cvae, data = trained
    data.setup("fit")
    train = data.splits["train"]
    images, labels = train.images.float().flatten(1) / (255 if train.images.dtype == torch.uint8 else 1), train.labels
    means = torch.stack([images[labels == k].mean(0) for k in range(10)])  # (10, 784)
    hits = 0
    for label in range(10):
        torch.manual_seed(0)
        samples = cvae.sample(32, context=torch.full((32,), label)).flatten(1)
        hits += int((torch.cdist(samples, means).argmin(dim=1) == label).sum())
    assert hits / 320 > 0.4  # 0.62 measured after the fixture's 120 steps
    grid = cvae.pictures(torch.rand(16, 1, 28, 28), context=torch.arange(16) % 10, nrow=8)
    assert grid["class_samples"].shape[1] == 10 * 28 + 11 * 2  # one row per class


def test_evaluate_reports_log_p_of_x_given_y(trained):
    cvae, data = trained
    batches = [next(iter(data.test_dataloader()))]
    result = evaluate(cvae, batches, num_samples=20)
    assert result.conditional and "log p(x | y), importance-weighted, K=20" in result.table()
    assert result.log_likelihood > result.elbo - 1.0


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
    with pytest.raises(ConfigError, match="conditional_prior false"):
        model(prior=LearnedGaussian())
    with pytest.raises(ConfigError, match="must be an encoder/decoder pair"):
        Conditional(network=TopDown())
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
    torch.testing.assert_close(grid, pictures.grid(want, 4))
    assert z.mean().item() > 1.0  # far from N(0, I)'s draws: ε alone would give a different picture
