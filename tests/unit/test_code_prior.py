"""The prior over codes against exact references: on a code grid small enough to enumerate, its probabilities of
every sequence sum to 1; it is causal (the logits at position i have zero gradient with respect to the codes at i and
after); the frequencies of sampled sequences match exp(log p) within their standard errors."""

import itertools

import pytest
import torch

from vae.models.code_prior import CodeTransformer


def prior(vocabulary: int, length: int, seed: int = 0) -> CodeTransformer:
    torch.manual_seed(seed)
    model = CodeTransformer(vocabulary=vocabulary, length=length, width=16, layers=2, heads=2, dropout=0.0).eval()
    with torch.no_grad():  # sharper than at initialisation, so that the distribution is far from uniform
        model.head.weight.mul_(20)
    return model


def log_p(model: CodeTransformer, tokens: torch.Tensor) -> torch.Tensor:
    logits = model(tokens)
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens[..., None])[..., 0].sum(dim=1)


@pytest.mark.parametrize(("vocabulary", "length"), [(3, 4), (2, 6), (5, 2)])
def test_the_probabilities_of_all_sequences_sum_to_one(vocabulary, length):
    model = prior(vocabulary, length)
    every = torch.tensor(list(itertools.product(range(vocabulary), repeat=length)))
    with torch.no_grad():
        total = torch.logsumexp(log_p(model, every).double(), dim=0)
    assert abs(total.item()) < 1e-5


def test_the_prior_is_causal():
    model = prior(4, 6)
    tokens = torch.randint(4, (3, 6))
    embedded = {}

    def keep(module, inputs, output):
        output.retain_grad()
        embedded["h"] = output

    handle = model.embed.register_forward_hook(keep)
    logits = model(tokens)
    handle.remove()
    h = embedded["h"]  # (b, n, f): input slot j holds the start token (j = 0) or code j − 1
    for i in range(6):
        h.grad = None
        logits[:, i].sum().backward(retain_graph=True)
        grad = h.grad.abs().sum(dim=(0, 2))  # per input slot
        # logits at i read slots 0..i, that is the codes before i; slots after i (codes i and later) get nothing
        assert torch.all(grad[i + 1 :] == 0), i
        assert grad[i] > 0  # and the code just before it does matter
    # The same property by perturbation: changing code j leaves the logits at positions ≤ j unchanged.
    with torch.no_grad():
        for j in range(6):
            changed = tokens.clone()
            changed[:, j] = (changed[:, j] + 1) % 4
            assert torch.equal(model(changed)[:, : j + 1], model(tokens)[:, : j + 1])


def test_sampled_frequencies_match_the_probabilities():
    model = prior(2, 3, seed=1)
    every = torch.tensor(list(itertools.product(range(2), repeat=3)))
    with torch.no_grad():
        probabilities = log_p(model, every).exp()
    torch.manual_seed(0)
    n = 20_000
    draws = model.sample(n)
    codes = (draws * torch.tensor([4, 2, 1])).sum(dim=1)
    frequencies = torch.bincount(codes, minlength=8).double() / n
    standard_error = (probabilities.double() * (1 - probabilities.double()) / n).sqrt()
    assert torch.all((frequencies - probabilities.double()).abs() < 4 * standard_error + 1e-4)
    assert probabilities.max() > 2 / 8  # the distribution is far from uniform: the test can fail


def test_temperature_zero_and_top_k_one_both_give_the_most_likely_code_at_each_step():
    model = prior(5, 4)
    greedy = model.sample(3, temperature=0)
    torch.manual_seed(1)
    top_one = model.sample(3, top_k=1)
    assert torch.equal(greedy, top_one)
    assert torch.equal(greedy[0], greedy[1])
    with torch.no_grad():
        logits = model(greedy)
    assert torch.equal(logits.argmax(dim=-1), greedy)
