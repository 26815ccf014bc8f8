"""A two-layer linear-Gaussian hierarchy built from the framework's own latent layers with linear cells:

    z2 ~ N(0, I),   z1 | z2 ~ N(A z2 + a, diag s1),   x | z1 ~ N(W z1 + b, s2 I)

is jointly Gaussian, so log p(x) and the top-down posterior q(z2 | x) q(z1 | z2, x) are exact. With W = U diag(w)
(U orthonormal columns) and A with columns orthogonal under Wᵀ C⁻¹ W, both exact posteriors are diagonal, so the
layers' diagonal Gaussians represent them exactly. Float64 throughout.

Axes: b batch, D data dimensions, d1/d2 the layers' sizes.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.distributions import MultivariateNormal

from vae.core.gaussian import LOGVAR_BOUND
from vae.layers.latents import GaussianLatent, TopDownLatent
from vae.layers.likelihoods import Gaussian
from vae.layers.priors import StandardNormal
from vae.models.base import Encoding, LatentVariableModel, ModelOutput
from vae.objectives.elbo import iwae_bound

D, D1, D2 = 5, 3, 2
S2 = 0.3**2  # the likelihood's variance


def unclamp(value: Tensor, bound: float) -> Tensor:
    """The raw value whose soft clamp (bound·tanh(raw/bound)) is ``value``."""
    return bound * torch.atanh(value / bound)


class Linear1x1(nn.Conv2d):
    """A linear map on (b, n, 1, 1) maps with given weight (out, in) and bias (out,)."""

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        super().__init__(weight.shape[1], weight.shape[0], kernel_size=1, dtype=torch.float64)
        with torch.no_grad():
            self.weight.copy_(rearrange(weight, "o i -> o i 1 1"))
            self.bias.copy_(bias)


class LinearHierarchy(LatentVariableModel):
    """x as a (D, 1, 1) image; the top-down state h is (D1, 1, 1): z2 padded with zeros, then z1."""

    def __init__(self, *, top_head: nn.Module, z1: TopDownLatent, output: nn.Module) -> None:
        super().__init__(image_shape=(D, 1, 1))
        self.likelihood = Gaussian(sigma=math.sqrt(S2))
        self.top = GaussianLatent(
            name="z2", shape=(D2, 1, 1), head=top_head, prior=StandardNormal(), image_shape=self.image_shape
        )
        self.z1 = z1
        self.output = output

    @property
    def layers(self):
        return [self.top, self.z1]

    def networks(self):
        return [self.output]

    def forward(self, x: Tensor, *, samples: int = 1, context=None, step=None) -> ModelOutput:
        x = torch.cat([x] * samples)  # "(k b)"
        top = self.top(x, encode=None)
        h = torch.cat([top.z, torch.zeros_like(top.z[:, : D1 - D2])], dim=1)  # (k·b, D1, 1, 1)
        below, h = self.z1(h, x)
        params = self.output(h)
        return ModelOutput(self.likelihood.log_prob(params, x), {"z2": top, "z1": below}, params, samples)

    def sample(self, n, *, temperature=1.0, context=None):
        raise NotImplementedError

    def encode(self, x, *, context=None):
        moments = self.top.moments(x)
        return Encoding(mean=moments.mean, variance=moments.logvar.exp())

    def decode(self, z, *, context=None):
        raise NotImplementedError

    def reconstruct(self, x, *, keep=None, context=None):
        raise NotImplementedError


def f64(*rows) -> Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def linear_gaussian(perturb: float = 0.0, seed: int = 0) -> tuple[LinearHierarchy, MultivariateNormal]:
    """The model with its exact posterior (every posterior parameter perturbed by ``perturb``·N(0, 1)), and the
    exact marginal p(x)."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(D, D1, generator=g, dtype=torch.float64))
    W = u * f64(1.5, 0.8, 1.2)  # U diag(w): WᵀW is diagonal
    b = 0.5 * torch.randn(D, generator=g, dtype=torch.float64)
    s1, a = f64(0.5, 0.3, 0.8), f64(0.2, -0.4, 0.1)
    A = f64([1.2, 0.0], [0.0, 0.7], [0.6, 0.0])  # columns orthogonal under any diagonal metric
    eye = torch.eye(D, dtype=torch.float64)
    # x | z2 ~ N(W (A z2 + a) + b, C1), C1 = W S1 Wᵀ + s2 I; then z2 | x and z1 | z2, x in closed form.
    C1_inv = torch.linalg.inv(W @ torch.diag(s1) @ W.T + S2 * eye)
    sigma2 = torch.linalg.inv(torch.eye(D2, dtype=torch.float64) + A.T @ W.T @ C1_inv @ W @ A)
    assert torch.allclose(sigma2, torch.diag(torch.diagonal(sigma2)), atol=1e-12)  # diagonal by construction
    G = sigma2 @ A.T @ W.T @ C1_inv  # E[z2 | x] = G (x − W a − b)
    sigma1 = 1.0 / (1.0 / s1 + (W**2).sum(0) / S2)  # Var[z1 | z2, x], diagonal as WᵀW is
    # E[z1 | z2, x] = Σ1 (S1⁻¹ (A z2 + a) + Wᵀ (x − b) / s2) = P z2 + Q x + c
    P, Q, c = sigma1[:, None] * A / s1[:, None], sigma1[:, None] * W.T / S2, sigma1 * (a / s1 - W.T @ b / S2)

    def noisy(t: Tensor) -> Tensor:
        return t + perturb * torch.randn(t.shape, generator=g, dtype=torch.float64)

    zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64)  # noqa: E731
    top_head = Linear1x1(  # x → [E[z2|x], log Var[z2|x]] (the log-variance before its soft clamp)
        torch.cat([noisy(G), zeros(D2, D)]),
        torch.cat([noisy(-G @ (W @ a + b)), unclamp(noisy(torch.diagonal(sigma2).log()), LOGVAR_BOUND)]),
    )
    half = LOGVAR_BOUND / 2  # the top-down layers' bound on log σ
    prior_head = Linear1x1(  # h = [z2, 0] → [A z2 + a, ½ log s1, −h]
        torch.cat([torch.cat([A, zeros(D1, D1 - D2)], dim=1), zeros(D1, D1), -torch.eye(D1, dtype=torch.float64)]),
        torch.cat([a, unclamp(0.5 * s1.log(), half), zeros(D1)]),
    )
    posterior_head = Linear1x1(  # [h, x] → [P z2 + Q x + c, ½ log Σ1]
        torch.cat([torch.cat([noisy(P), zeros(D1, D1 - D2), noisy(Q)], dim=1), zeros(D1, D1 + D)]),
        torch.cat([noisy(c), unclamp(noisy(0.5 * sigma1.log()), half)]),
    )
    project = Linear1x1(torch.eye(D1, dtype=torch.float64), zeros(D1))  # the state after z1: h + z1 − h = z1
    z1 = TopDownLatent(
        name="z1",
        channels=D1,
        width=D1,
        positions=1,
        prior_head=prior_head,
        posterior_head=posterior_head,
        project=project,
    )
    model = LinearHierarchy(top_head=top_head, z1=z1, output=Linear1x1(W, b)).double()
    covariance = W @ (A @ A.T + torch.diag(s1)) @ W.T + S2 * eye
    return model, MultivariateNormal(W @ a + b, covariance)


def data(marginal: MultivariateNormal, n: int = 64) -> Tensor:
    torch.manual_seed(1)
    return rearrange(marginal.sample(torch.Size([n])), "b d -> b d 1 1")


@torch.no_grad()
def test_the_exact_posterior_makes_every_importance_weight_log_p_x():
    """With q the exact posterior, log w = log p(x, z) − log q(z|x) = log p(x) for every sample, so the ELBO
    (its mean) equals log p(x); checked to 1e-4 on every sample of every example."""
    model, marginal = linear_gaussian()
    x = data(marginal)
    log_px = marginal.log_prob(rearrange(x, "b d 1 1 -> b d"))
    log_w = model.log_weights(x, 16)  # (16, b)
    assert (log_w - log_px).abs().max() < 1e-4
    # The ELBO with the layers' closed-form KLs: log p(x|z) − KL is log p(x) on average (its variance is
    # from log p(x|z) alone): within 4 standard errors over 4000 samples of each example.
    out = model(x, samples=4000)
    elbo = rearrange(out.log_px - out.kl, "(k b) -> k b", k=4000)
    se = elbo.std(dim=0) / math.sqrt(4000)
    assert ((elbo.mean(dim=0) - log_px).abs() < 4 * se + 1e-6).all()


@torch.no_grad()
def test_a_perturbed_posterior_orders_elbo_iwae_and_log_p_x():
    """ELBO ≤ IWAE_K ≤ log p(x), rising with K: each bound averaged over 400 repeats, over the examples."""
    model, marginal = linear_gaussian(perturb=0.3)
    x = data(marginal, n=16)
    log_px = marginal.log_prob(rearrange(x, "b d 1 1 -> b d")).mean().item()
    torch.manual_seed(2)
    bounds = {}
    for k in (1, 4, 16, 64):
        log_w = rearrange(model.log_weights(x.repeat(400, 1, 1, 1), k), "k (r b) -> r k b", r=400)
        bounds[k] = torch.stack([iwae_bound(w) for w in log_w]).mean().item()
    assert bounds[1] < bounds[4] < bounds[16] < bounds[64] < log_px
    assert log_px - bounds[1] > 0.05  # the perturbation costs something: the ordering is not noise
