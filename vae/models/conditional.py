"""Conditional VAEs (Sohn et al. 2015): a model of p(x | y) for a label, or any context vector, y.

    posterior  q(z | x, y) = N(μ, σ²) from the encoder's features of x and y together (an MLP head)
    prior      p(z | y) = N(μ(y), σ²(y)), linear in y and starting at N(0, I) (``conditional_prior``), or the
               unconditional ``prior``
    decoder    p(x | z, y), the decoder reading [z, y]
    ELBO       E_q[log p(x | z, y)] − D_KL(q(z | x, y) ‖ p(z | y)) ≤ log p(x | y)

y is the batch's labels, which the training module hands every model: integer classes (b,) become one-hot vectors
of ``context_size`` (the data's number of classes), float vectors (b, ``context_size``) are read as they are
(attributes, embeddings). ``vae evaluate`` reports the importance-weighted log p(x | y); the pictures add
``class_samples``, one row per class with the same noise in each column (what the label changes, the style held).

Axes: b batch, k samples per example, m context features, d latent dimensions.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from einops import repeat
from torch import Tensor, nn

from vae.core.errors import ConfigError
from vae.core.gaussian import LOGVAR_BOUND, GaussianMoments, full_precision, soft_clamp
from vae.core.kl import KLEstimator
from vae.core.pixels import as_unit
from vae.layers.latents import GaussianLatent
from vae.layers.likelihoods import Bernoulli, Likelihood
from vae.layers.nets import ConvNet, Network
from vae.layers.priors import Prior, StandardNormal, VampPrior
from vae.models import pictures
from vae.models.base import Capabilities, Encoding, LatentVariableModel, ModelOutput, inferring, renamed_keys


class ConditionalVAE(LatentVariableModel):
    """A conditional VAE: one Gaussian latent vector z of ``latent_dim`` dimensions, and the context y in the encoder,
    the decoder and (optionally) the prior.

    network: the encoder/decoder pair (``ConvNet`` by default, ``MLPNet``, ...); the decoder reads [z, y].
    conditional_prior: p(z | y) learned (True), or the unconditional ``prior`` for every y (False; not the VampPrior,
        whose pseudo-inputs have no label).
    likelihood, prior, kl_estimator, kl_samples: as for ``VAE``.
    context_size: from the data: the number of classes of integer labels, or the length of float context vectors;
        data without labels (None) cannot train it.
    """

    RENAMED = {"encoder.": "network.encoder.", "decoder.": "network.decoder."}  # before the network held both

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        context_size: int | None = None,
        latent_dim: int = 16,
        network: Network | None = None,
        likelihood: Likelihood | None = None,
        prior: Prior | None = None,
        conditional_prior: bool = True,
        kl_estimator: KLEstimator = "auto",
        kl_samples: int = 1,
    ) -> None:
        super().__init__(image_shape=image_shape, context_size=context_size)
        if context_size is None:
            raise ConfigError(
                "a ConditionalVAE needs labelled data (its context y): this data module gives no labels "
                "(context_size None); use labelled data, or an unconditional model such as vae.models.VAE"
            )
        if latent_dim < 1:
            raise ConfigError(f"latent_dim must be a positive integer, got {latent_dim}")
        network = ConvNet() if network is None else network
        likelihood = Bernoulli() if likelihood is None else likelihood
        prior = StandardNormal() if prior is None else prior
        if isinstance(prior, VampPrior):
            raise ConfigError("the VampPrior's pseudo-inputs have no label: a ConditionalVAE takes another prior")
        if conditional_prior and not isinstance(prior, StandardNormal):
            raise ConfigError(
                f"the prior {type(prior).__name__} does not apply with conditional_prior true (p(z | y) is learned): "
                "set the model's conditional_prior to false to use it"
            )
        self.record(network=network, likelihood=likelihood, prior=prior)
        self.likelihood, self.latent_dim = likelihood, latent_dim
        self.network = self.bind_network(network, likelihood, code_dim=latent_dim + self.context_size)
        features = network.features
        head = nn.Sequential(
            nn.Linear(features + self.context_size, features), nn.SiLU(), nn.Linear(features, 2 * latent_dim)
        )
        self.latent = GaussianLatent(
            name="z",
            shape=(latent_dim,),
            head=head,
            prior=prior,
            image_shape=self.image_shape,
            kl_estimator=kl_estimator,
            kl_samples=kl_samples,
        )
        self.labels_checked = False
        self.prior_net: nn.Linear | None = None
        if conditional_prior:
            self.prior_net = nn.Linear(self.context_size, 2 * latent_dim)
            nn.init.zeros_(self.prior_net.weight)  # p(z | y) starts at N(0, I) for every y
            nn.init.zeros_(self.prior_net.bias)
        self.latent.resolve(kl_estimator, self.no_encode)
        if self.prior_net is not None:
            self.latent.kl_splits = False  # the prior depends on y: no one aggregate prior to split against

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            kl_split=self.latent.kl_splits,
            kl_per_dimension=self.latent.factorises,
            conditional=True,
            continuous_code=True,
        )

    def upgrade_state_dict(self, state: Mapping[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
        return renamed_keys(state, self.RENAMED, prefix)

    @staticmethod
    def no_encode(x: Tensor) -> GaussianMoments:
        raise ConfigError("a ConditionalVAE's prior does not encode images")

    @property
    def layers(self) -> list[GaussianLatent]:
        return [self.latent]

    def networks(self) -> list[nn.Module]:
        return [self.network.encoder, self.network.decoder]

    def context(self, labels: Tensor | None, n: int) -> Tensor:
        """The context vectors (n, classes) of labels: one-hot for integer classes, as given for float vectors; a
        one-line error for missing labels or labels of another kind."""
        if labels is None:
            raise ConfigError(
                "a ConditionalVAE needs the labels y of its images (context=...); data without labels cannot train "
                "or evaluate it"
            )
        if labels.shape[0] != n:  # shapes, not len(): a traced or exported graph keeps its batch size free
            raise ConfigError(f"a ConditionalVAE got {labels.shape[0]} labels for {n} images")
        if labels.dim() == 1 and not labels.is_floating_point():
            if labels.device.type == "cpu" or not self.labels_checked:  # on a GPU once: a check is a host sync
                low, high = (int(v) for v in torch.stack([labels.min(), labels.max()]).tolist())
                classes = self.context_size
                if low < 0 or high >= classes:
                    raise ConfigError(
                        f"label {high if high >= classes else low} is outside the {classes} classes of this "
                        "ConditionalVAE (its context_size, from the data it was trained on)"
                    )
                self.labels_checked = True
            return F.one_hot(labels.long(), self.context_size).float()
        if labels.dim() == 2 and labels.shape[1] == self.context_size and labels.is_floating_point():
            return labels.float()
        raise ConfigError(
            f"a ConditionalVAE takes integer class labels (b,) or float context vectors (b, {self.context_size}); got "
            f"{labels.dtype} labels of shape {tuple(labels.shape)}"
        )

    def posterior(self, x: Tensor, y: Tensor) -> GaussianMoments:
        """q(z | x, y)'s moments (b, d), for images in [0, 1] and context vectors y (b, classes)."""
        return self.latent.moments(torch.cat([self.network.encoder(x), y.to(x.dtype)], dim=1))

    def conditional_prior(self, y: Tensor) -> GaussianMoments | None:
        """p(z | y)'s moments (b, d), or None for the unconditional prior."""
        if self.prior_net is None:
            return None
        mean, raw_logvar = self.prior_net(y).chunk(2, dim=1)
        return GaussianMoments(mean=mean, logvar=soft_clamp(raw_logvar, LOGVAR_BOUND))

    def forward(
        self, x: Tensor, *, samples: int = 1, context: Tensor | None = None, step: int | None = None
    ) -> ModelOutput:
        x = as_unit(x)
        y = self.context(context, len(x))
        h = torch.cat([self.network.encoder(x), y.to(x.dtype)], dim=1)
        if samples > 1:
            x, y = repeat(x, "b c h w -> (k b) c h w", k=samples), repeat(y, "b m -> (k b) m", k=samples)
        prior = self.conditional_prior(y)
        latent = self.latent(
            h, encode=self.no_encode, samples=samples, prior=None if prior is None else prior.distribution()
        )
        params = full_precision(self.network.decoder(torch.cat([latent.z, y.to(latent.z.dtype)], dim=1)))
        return ModelOutput(self.likelihood.log_prob(params, x), {"z": latent}, params, samples)

    @inferring
    def encode(self, x: Tensor, *, context: Tensor | None = None) -> Encoding:
        """q(z | x, y) given the labels (or context vectors) ``context``."""
        moments = self.posterior(as_unit(x), self.context(context, x.shape[0]))
        return Encoding.of(moments)

    @inferring
    def decode(self, z: Tensor, *, context: Tensor | None = None) -> Tensor:
        """E[x | z, y] for latents z (b, d) and the labels (or context vectors) ``context``."""
        return self.decode_given(z, self.context(context, z.shape[0]))

    def decode_given(self, z: Tensor, y: Tensor) -> Tensor:
        """E[x | z, y] for latents z (b, d) and context vectors y (b, classes)."""
        return self.likelihood.mean(self.network.decoder(torch.cat([z, y.to(z.dtype)], dim=1)))

    def default_labels(self, n: int, device: torch.device) -> Tensor:
        """Labels 0, 1, …, classes − 1, 0, 1, … for n draws (where no context is given)."""
        return torch.arange(n, device=device) % self.context_size

    @inferring
    def sample(self, n: int, *, temperature: float = 1.0, context: Tensor | None = None) -> Tensor:
        """E[x | z, y] for n draws z ~ p(z | y), with the labels ``context`` (by default the classes in turn)."""
        device = next(self.parameters()).device
        y = self.context(self.default_labels(n, device) if context is None else context, n)
        prior = self.conditional_prior(y)
        if prior is None:
            z = self.latent.sample_prior(n, encode=self.no_encode, temperature=temperature)
        else:
            z = prior.mean + temperature * (0.5 * prior.logvar).exp() * torch.randn_like(prior.mean)
        return self.decode_given(z, y)

    @inferring
    def reconstruct(self, x: Tensor, *, keep: int | None = None, context: Tensor | None = None) -> Tensor:
        if keep == 0:
            return self.sample(len(x), context=context)
        x = as_unit(x)
        y = self.context(context, len(x))
        return self.decode_given(self.posterior(x, y).mean, y)

    @torch.no_grad()
    def class_samples(self, *, nrow: int = 8, seed: int = 0, temperature: float = 1.0) -> Tensor:
        """One row per class (the first 10 classes of more), ``nrow`` columns. Each column draws the same
        standard-normal noise ε for every class, z = μ(y) + σ(y)·ε; under an unconditional prior each column draws
        one z from the model's ``prior`` for every class."""
        device = next(self.parameters()).device
        classes = min(self.context_size, 10)
        labels = repeat(torch.arange(classes, device=device), "y -> (y s)", s=nrow)
        y = self.context(labels, len(labels))
        prior = self.conditional_prior(y)
        with pictures.seeded(self, seed):
            if prior is None:
                columns = self.latent.sample_prior(nrow, encode=self.no_encode, temperature=temperature)
            else:
                columns = torch.randn(nrow, self.latent_dim, device=device) * temperature
        z = repeat(columns, "s d -> (y s) d", y=classes)
        if prior is not None:
            z = prior.mean + (0.5 * prior.logvar).exp() * z
        images = self.decode_given(z, y)
        names = [f"y = {k}" for k in range(classes)]
        caption = "one row per class, the same noise down each column"
        return pictures.labelled(pictures.grid(images, nrow), cell=images.shape[-2:], rows=names, caption=caption)

    @torch.no_grad()
    def pictures(
        self,
        x: Tensor,
        *,
        context: Tensor | None = None,
        ranking: Tensor | None = None,
        nrow: int = 8,
        seed: int = 0,
        num_samples: int = 64,
    ) -> dict[str, Tensor]:
        """Samples (the classes in turn), ``class_samples`` (one row per class) and, given the labels,
        reconstructions."""
        grids = {"samples": pictures.samples(self, num=num_samples, nrow=nrow, seed=seed)}
        grids["class_samples"] = self.class_samples(nrow=nrow, seed=seed)
        rows = len(x) // nrow * nrow
        if rows and context is not None:
            grids["reconstructions"] = pictures.reconstructions(self, x[:rows], nrow=nrow, context=context[:rows])
        return grids
