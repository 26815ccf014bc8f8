"""Samplers fitted after training to where a model's codes are.

A VAE's prior p(z) and its aggregate posterior q(z) = E_x[q(z|x)] differ (the KL term only pulls them together), and
the decoder has been trained on codes from q(z). Drawing codes from a fit of q(z) and decoding them gives samples from
where the decoder has been (Ghosh et al. 2020; pythae's GMM and MAF samplers; the two-stage VAE of Dai & Wipf 2019 is
the same idea with a second VAE):

    GaussianMixtureSampler   K full-covariance Gaussians fitted by EM (scikit-learn's GaussianMixture)
    FlowSampler              a masked autoregressive flow (zuko's MAF) fitted by maximum likelihood with Adam, on
                             standardized codes

Both fit the codes ``encode`` gives (the posterior means, what ``decode`` takes) of the training images, and report
the average log-density of held-out codes (nats per code; higher is a better fit). A sampler file (``save``) records
the model's fingerprint and code size, and ``load`` refuses it for any other model in one line.

Axes: n codes, d code dimensions, k components.
"""

from __future__ import annotations

import copy
import math
import pickle
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import zuko
from torch import Tensor, nn
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal
from tqdm.auto import tqdm

from vae.core.errors import ConfigError, DataError

FORMAT = 1


class CodeSampler(nn.Module, ABC):
    """A density over codes of ``dim`` dimensions, fitted to a model's codes (``fit``), that draws new ones."""

    kind: str
    dim: int

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def settings(self) -> dict[str, Any]:
        """The constructor's arguments besides ``dim``, as saved."""
        return {}

    @abstractmethod
    def fit(self, codes: Tensor, *, seed: int = 0, progress: bool = True) -> None:
        """Fit to codes (n, d), seeded; a progress bar where it takes long."""

    @abstractmethod
    def log_prob(self, codes: Tensor) -> Tensor:
        """log-density of each code (n,), nats."""

    @abstractmethod
    def sample(self, n: int, *, temperature: float = 1.0) -> Tensor:
        """n codes (n, d); ``temperature`` scales the spread (of each component, or of the flow's base)."""


class GaussianMixtureSampler(CodeSampler):
    """A mixture of ``components`` full-covariance Gaussians, fitted by EM (k-means initialised, 1e-6 added to each
    covariance's diagonal)."""

    kind = "gmm"

    def __init__(self, *, dim: int, components: int = 10) -> None:
        super().__init__(dim=dim)
        if components < 1:
            raise ConfigError(f"the Gaussian mixture sampler needs at least 1 component, got {components}")
        self.components = components
        self.register_buffer("weights", torch.full((components,), 1.0 / components))
        self.register_buffer("means", torch.zeros(components, dim))
        self.register_buffer("scale_tril", torch.eye(dim).repeat(components, 1, 1))

    def settings(self) -> dict[str, Any]:
        return {"components": self.components}

    def fit(self, codes: Tensor, *, seed: int = 0, progress: bool = True) -> None:
        from sklearn.mixture import GaussianMixture

        if len(codes) < self.components:
            raise ConfigError(f"{len(codes)} codes cannot fit {self.components} mixture components: use fewer")
        mixture = GaussianMixture(self.components, covariance_type="full", reg_covar=1e-6, random_state=seed)
        mixture.fit(codes.double().cpu().numpy())
        self.weights.copy_(torch.from_numpy(mixture.weights_))
        self.means.copy_(torch.from_numpy(mixture.means_))
        self.scale_tril.copy_(torch.linalg.cholesky(torch.from_numpy(mixture.covariances_)))

    def distribution(self, temperature: float = 1.0) -> MixtureSameFamily:
        components = MultivariateNormal(self.means, scale_tril=temperature * self.scale_tril, validate_args=False)
        return MixtureSameFamily(Categorical(probs=self.weights), components, validate_args=False)

    def log_prob(self, codes: Tensor) -> Tensor:
        return self.distribution().log_prob(codes)

    def sample(self, n: int, *, temperature: float = 1.0) -> Tensor:
        return self.distribution(max(temperature, 1e-12)).sample(torch.Size([n]))


class FlowSampler(CodeSampler):
    """A masked autoregressive flow (zuko's MAF: ``transforms`` transforms of ``hidden`` MLPs) on the codes standardized
    per dimension, fitted for up to ``steps`` Adam steps (learning rate 1e-3) on batches of 256, early-stopped on a
    tenth of the codes kept aside."""

    kind = "flow"

    def __init__(self, *, dim: int, transforms: int = 3, hidden: tuple[int, ...] = (128, 128), steps: int = 2000):
        super().__init__(dim=dim)
        if transforms < 1 or steps < 1 or not hidden or min(hidden) < 1:
            raise ConfigError("the flow sampler needs positive transforms, steps and hidden widths")
        self.transforms, self.hidden, self.steps = transforms, tuple(hidden), steps
        self.flow = zuko.flows.MAF(features=dim, transforms=transforms, hidden_features=self.hidden)
        self.register_buffer("center", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def settings(self) -> dict[str, Any]:
        return {"transforms": self.transforms, "hidden": list(self.hidden), "steps": self.steps}

    def fit(self, codes: Tensor, *, seed: int = 0, progress: bool = True) -> None:
        """Adam on batches of 256 of nine tenths of the codes; every 50 steps the last tenth is scored, and the flow
        keeps its best state on it (training stops after 10 scores without a gain)."""
        codes = codes.float()
        self.center.copy_(codes.mean(dim=0))
        self.scale.copy_(codes.std(dim=0).clamp_min(1e-6))
        generator = torch.Generator().manual_seed(seed)
        standard = ((codes - self.center) / self.scale)[torch.randperm(len(codes), generator=generator)]
        cut = max(1, len(standard) // 10)
        check, train = standard[:cut], standard[cut:]
        optimizer = torch.optim.Adam(self.flow.parameters(), lr=1e-3)
        best, best_state, waited = -math.inf, None, 0
        bar = tqdm(range(self.steps), desc="fitting the flow sampler", disable=None if progress else True, leave=False)
        with bar:
            for step in bar:
                batch = train[torch.randint(len(train), (256,), generator=generator)]
                loss = -self.flow().log_prob(batch).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if step % 50 == 49:
                    with torch.no_grad():
                        held = float(self.flow().log_prob(check).mean())
                    bar.set_postfix(held_out=f"{held:.3f}", refresh=False)
                    if held > best:
                        best, best_state, waited = held, copy.deepcopy(self.flow.state_dict()), 0
                    else:
                        waited += 1
                        if waited == 10:
                            break
        if best_state is not None:  # else fewer than 50 steps: the last state
            self.flow.load_state_dict(best_state)
        self.eval()

    def log_prob(self, codes: Tensor) -> Tensor:
        return self.flow().log_prob((codes - self.center) / self.scale) - self.scale.log().sum()

    def sample(self, n: int, *, temperature: float = 1.0) -> Tensor:
        flow = self.flow()
        return self.center + self.scale * flow.transform.inv(temperature * flow.base.sample(torch.Size([n])))


SAMPLERS: dict[str, type[CodeSampler]] = {"gmm": GaussianMixtureSampler, "flow": FlowSampler}


@dataclass(frozen=True)
class Fitted:
    """A fitted sampler and how well it fits: the mean log-density of held-out codes (nats per code) and of the
    codes it was fitted to, and how many of each."""

    sampler: CodeSampler
    held_out_log_prob: float
    train_log_prob: float
    train_codes: int
    held_out_codes: int


def make_sampler(kind: str, *, dim: int, **settings: Any) -> CodeSampler:
    if kind not in SAMPLERS:
        raise ConfigError(f"unknown sampler {kind!r}: use one of {', '.join(SAMPLERS)}")
    return SAMPLERS[kind](dim=dim, **settings)


@torch.no_grad()
def score(sampler: CodeSampler, codes: Tensor) -> float:
    return float(sampler.log_prob(codes.float()).mean())


def fit_sampler(kind: str, codes: Tensor, *, seed: int = 0, held_out: float = 0.1, progress: bool = True) -> Fitted:
    """A sampler of ``kind`` ("gmm" or "flow") fitted to codes (n, d), a random ``held_out`` share kept out to score
    the fit."""
    if codes.dim() != 2 or len(codes) < 10:
        raise ConfigError(f"a sampler needs at least 10 codes of shape (n, d), got {tuple(codes.shape)}")
    order = torch.randperm(len(codes), generator=torch.Generator().manual_seed(seed))
    cut = max(1, int(len(codes) * held_out))
    kept, train = codes[order[:cut]], codes[order[cut:]]
    sampler = make_sampler(kind, dim=codes.shape[1])
    sampler.fit(train, seed=seed, progress=progress)
    return Fitted(sampler, score(sampler, kept), score(sampler, train), len(train), len(kept))


def save_sampler(path: Path, sampler: CodeSampler, *, fingerprint: str) -> None:
    """The sampler with what it was fitted to (the model's fingerprint, the code size): tensors and plain data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {
        "format": FORMAT,
        "kind": sampler.kind,
        "dim": sampler.dim,
        "settings": sampler.settings(),
        "fingerprint": fingerprint,
        "state": sampler.state_dict(),
    }
    partial = path.with_name(path.name + ".partial")
    torch.save(content, partial)
    partial.replace(path)


def load_sampler(path: Path, *, fingerprint: str, dim: int) -> CodeSampler:
    """A saved sampler, refused in one line if it was fitted to another model or to codes of another size."""
    unreadable = (OSError, RuntimeError, KeyError, TypeError, ValueError, EOFError, pickle.UnpicklingError)
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
        kind, saved_dim, saved = content["kind"], int(content["dim"]), content["fingerprint"]
        if content["format"] != FORMAT:
            raise ValueError(f"format {content['format']}, this version reads {FORMAT}")
    except unreadable as error:
        raise DataError(f"cannot read the sampler {path}: not a sampler file ({type(error).__name__})") from error
    if saved_dim != dim:
        raise ConfigError(
            f"the sampler {path} was fitted to codes of {saved_dim} dimensions, and this model's have {dim}: fit one "
            "for this model (vae sample --sampler gmm|flow)"
        )
    if saved != fingerprint:
        raise ConfigError(
            f"the sampler {path} was fitted to another model (fingerprint {saved}, this one {fingerprint}): fit one "
            "for this model (vae sample --sampler gmm|flow --refit)"
        )
    try:
        sampler = make_sampler(kind, dim=dim, **content["settings"])
        sampler.load_state_dict(content["state"])
    except (KeyError, TypeError, RuntimeError) as error:
        reason = f"its settings or weights do not fit ({type(error).__name__})"
        raise DataError(f"cannot read the sampler {path}: {reason}") from error
    return sampler.eval()
