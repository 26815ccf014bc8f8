"""A conditional VAE trained by the real Trainer on MNIST uses its labels: its ELBO falls when the labels are
shuffled, its samples follow their label, and `evaluate` reports log p(x | y). (The model's numbers and errors on
their own: tests/unit/test_conditional.py.)"""

from functools import partial

import pytest
import torch
from conftest import tiny_trainer

from vae.data.embedded import EmbeddedMNIST
from vae.layers.nets.mlp import MLPNet
from vae.metrics.likelihood import evaluate, importance_weighted_log_likelihood
from vae.models.conditional import ConditionalVAE
from vae.training.module import VAEModule


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A conditional VAE (MLP, 8 latent dimensions, p(z | y) learned) trained by the real Trainer for 3 epochs (120
    steps, Adam at 3e-3) on the 4,000 training digits of MNIST-5k: the training module hands it the labels."""
    torch.manual_seed(0)
    model = ConditionalVAE(image_shape=(1, 28, 28), context_size=10, latent_dim=8, network=MLPNet(hidden_dims=(128,)))
    module = VAEModule(model=model, optimizer=partial(torch.optim.Adam, lr=3e-3))
    data = EmbeddedMNIST(batch_size=100, binarize="static")
    trainer = tiny_trainer(tmp_path_factory.mktemp("cvae"), max_epochs=3, limit_val_batches=0)
    trainer.fit(module, datamodule=data)
    data.setup("test")
    return module.model.eval(), data


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
    height = 10 * 28 + 11 * 2  # one row per class, each named to its right (y = 0 ... y = 9)
    assert grid["class_samples"].shape[1] >= height and grid["class_samples"].shape[2] > 8 * 28 + 9 * 2


def test_evaluate_reports_log_p_of_x_given_y(trained):
    cvae, data = trained
    batches = [next(iter(data.test_dataloader()))]
    result = evaluate(cvae, batches, num_samples=20)
    assert result.conditional and "log p(x | y), importance-weighted, K=20" in result.table()
    assert result.log_likelihood > result.elbo - 1.0
