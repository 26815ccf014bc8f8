"""Bits-back coding (vae.coding): exact round trips on real digits for every model kind and discrete likelihood, the
coded length against exact references (a model whose ELBO is log p(x), enumerated; the single-sample discretized
−ELBO the coder measures; the continuous −ELBO), the file's checks, and one-line refusals."""

import math

import numpy as np
import pytest
import torch
from einops import rearrange, repeat
from PIL import Image
from torch import Tensor, nn
from torch.distributions import Categorical

from vae.coding.baselines import baseline_bits
from vae.coding.bitsback import BitsBackCoder, CodingError
from vae.coding.container import FORMAT, Container
from vae.coding.images import read_images, write_images
from vae.coding.tables import Latent, bucket_masses
from vae.core.errors import ConfigError, DataError
from vae.data.embedded import load_embedded_mnist
from vae.layers.flows import IAF
from vae.layers.likelihoods import Bernoulli, DiscretizedLogistic, DiscretizedLogisticMixture, Gaussian
from vae.layers.posteriors import FullCovariance
from vae.layers.priors import GaussianMixture, LearnedGaussian, VampPrior
from vae.layers.quantizers import FSQ
from vae.models import VAE, VQVAE, HierarchicalVAE
from vae.models.base import Encoding, LatentVariableModel, LayerLaw
from vae.models.code_prior import CodePrior

DIGITS = load_embedded_mnist().images[::97][:48]  # 48 real digits of every class, uint8 (48, 1, 28, 28)


def binary(images: Tensor) -> Tensor:
    return (images > 127).long()


def round_trip(model: LatentVariableModel, values: Tensor, **settings) -> tuple[BitsBackCoder, object]:
    coder = BitsBackCoder(model.eval(), **settings)
    coded = coder.encode(values)
    back = coder.decode(
        coded.words,
        batches=coded.batches,
        initial_words=coded.initial_words,
        checksums=coded.checksums,
        digest_of_values=coded.digest,
    )
    assert back.dtype == torch.long and torch.equal(back, values)
    assert sum(coded.batches) == len(values) and max(coded.batches) <= coder.batch_size
    return coder, coded


def stacked_rgb(images: Tensor) -> Tensor:
    """Colour images from real digits: three digits as the red, green and blue channels, (n, 3, 28, 28)."""
    return rearrange(images[: 3 * (len(images) // 3)], "(n c) 1 h w -> n c h w", c=3)


MODELS = {
    "VAE, Bernoulli": (lambda: VAE(image_shape=(1, 28, 28), latent_dim=8), binary(DIGITS)),
    "VAE, learned prior, logistic": (
        lambda: VAE(image_shape=(1, 28, 28), latent_dim=8, likelihood=DiscretizedLogistic(), prior=LearnedGaussian()),
        DIGITS.long(),
    ),
    "VAE, RGB, logistic mixture": (
        lambda: VAE(image_shape=(3, 28, 28), latent_dim=8, likelihood=DiscretizedLogisticMixture(num_components=3)),
        stacked_rgb(DIGITS).long(),
    ),
    "hierarchy, Bernoulli": (lambda: HierarchicalVAE(image_shape=(1, 28, 28)), binary(DIGITS)),
    "hierarchy, logistic mixture": (
        lambda: HierarchicalVAE(
            image_shape=(1, 28, 28),
            latent_channels=(8, 4),
            resolutions=(1, 7),
            residual_normal=True,
            likelihood=DiscretizedLogisticMixture(num_components=4),
        ),
        DIGITS.long(),
    ),  # fmt: skip
    "VQ, uniform prior": (lambda: VQVAE(image_shape=(1, 28, 28), quantizer=FSQ(levels=(5, 5))), binary(DIGITS)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_every_image_comes_back_bit_for_bit(name):
    make, values = MODELS[name]
    torch.manual_seed(1)
    coder, coded = round_trip(make(), values, batch_size=16)
    popping = coded.costs.bits_back.any()  # a quantized code pops nothing, and needs no initial bits to start
    assert coded.batches[0] == (1 if popping else 16)  # the first batch is what the initial bits pay for
    assert np.all(np.isfinite(coded.costs.net)) and coded.costs.pixels.min() > 0


def test_one_image_and_images_at_the_extreme_values_come_back():
    torch.manual_seed(2)
    model = VAE(image_shape=(1, 28, 28), latent_dim=4, likelihood=DiscretizedLogisticMixture(num_components=2))
    extremes = torch.stack([torch.zeros(1, 28, 28), torch.full((1, 28, 28), 255.0)]).long()
    round_trip(model, extremes)
    round_trip(model, extremes[1:])  # a batch of one image
    round_trip(
        VAE(image_shape=(1, 28, 28), latent_dim=4), torch.stack([torch.zeros(1, 28, 28), torch.ones(1, 28, 28)]).long()
    )


def test_a_learned_prior_over_codes_is_coded_one_position_at_a_time():
    torch.manual_seed(3)
    first = VQVAE(image_shape=(1, 28, 28), quantizer=FSQ(levels=(3, 3)), channels=(16, 16), blocks=0).eval()
    prior = CodePrior(
        image_shape=(1, 28, 28), first_stage="unread", first_stage_model=first, width=16, layers=1, heads=2
    )
    _, coded = round_trip(prior, binary(DIGITS[:10]))
    assert coded.costs.bits_back.sum() == 0  # a deterministic code: nothing popped, no bits back
    # Its latents' cost is the prior's cross-entropy on the codes, −log2 p(c), as the model's KL (nats) says.
    with torch.no_grad():
        out = prior.eval()(binary(DIGITS[:10]).float())
    assert coded.costs.latents == pytest.approx(out.kl.double().numpy() / math.log(2), rel=1e-4)


class ExactMixture(LatentVariableModel):
    """A mixture of K Bernoulli images on 4×4 pixels with its exact posterior: p(z|x) ∝ π_z p(x|z), so the ELBO is
    log p(x), which is enumerated."""

    def __init__(self, *, components: int = 6) -> None:
        super().__init__(image_shape=(1, 4, 4))
        generator = torch.Generator().manual_seed(0)
        self.log_pi = nn.Parameter(torch.log_softmax(torch.randn(components, generator=generator), dim=0))
        self.logits = nn.Parameter(3 * torch.randn(components, 1, 4, 4, generator=generator))
        self.likelihood = Bernoulli()

    def joint(self, x: Tensor) -> Tensor:
        """log π_z + log p(x|z) for every z, (b, K)."""
        k = len(self.log_pi)
        logits = repeat(self.logits, "k c h w -> (b k) c h w", b=len(x))
        log_px = self.likelihood.log_prob(logits, repeat(x, "b c h w -> (b k) c h w", k=k))
        return rearrange(log_px, "(b k) -> b k", k=k) + self.log_pi

    def log_px(self, x: Tensor) -> Tensor:
        return torch.logsumexp(self.joint(x), dim=1)

    def coding_refusal(self):
        return None

    def walk(self, n, *, x, choose):
        prior = Categorical(logits=repeat(self.log_pi, "k -> n 1 k", n=n))
        posterior = None if x is None else Categorical(logits=rearrange(self.joint(x), "b k -> b 1 k"))
        z = choose(LayerLaw(name="z", prior=prior, posterior=posterior))
        return self.logits[z[:, 0]]

    def forward(self, x, *, samples=1, context=None, step=None):
        raise NotImplementedError  # the coder needs walk only

    def sample(self, n, *, temperature=1.0, context=None):
        return torch.sigmoid(self.logits[torch.multinomial(self.log_pi.exp(), n, replacement=True)])

    def reconstruct(self, x, *, keep=None, context=None):
        return torch.sigmoid(self.logits[self.joint(x).argmax(dim=1)])

    def encode(self, x, *, context=None):
        p = torch.softmax(self.joint(x), dim=1)
        return Encoding(mean=p, variance=p * (1 - p))

    def decode(self, z, *, context=None):
        return torch.sigmoid(self.logits[z.long()])


def test_with_the_exact_posterior_the_code_length_approaches_minus_log_p_x():
    model = ExactMixture()
    torch.manual_seed(4)
    with torch.no_grad():
        images = torch.bernoulli(model.sample(400)).long()
        neg_log2_px = (-model.log_px(images.float()) / math.log(2)).double().numpy()
    excess = {}
    for n in (25, 400):
        coder, coded = round_trip(model, images[:n], batch_size=32)
        # Every image costs exactly −log2 p(x): −log p(x|z) − log P(z) + log Q(z|x) whatever z, Q being p(z|x)
        # (to float32's precision, the model's).
        assert coded.costs.net == pytest.approx(neg_log2_px[:n], rel=1e-6)
        excess[n] = (32 * len(coded.words) - neg_log2_px[:n].sum()) / n
        # The stated overhead: the initial words, the last word's rounding, and the coder's 24-bit probabilities.
        assert excess[n] <= (32 * coded.initial_words + 32) / n + 0.01
    assert excess[400] < excess[25]  # the one-time cost amortizes: the file approaches −log2 p(x) per image


def test_the_file_is_the_single_sample_discretized_negative_elbo_and_near_the_model_s():
    """The stack grows by each image's pixels + latents − bits back, as the coder measured them from the probabilities
    it coded with, to within 32 bits per pop the ANS state can round plus the final word: that is the bound. Averaged
    over the images, that single-sample −ELBO with 2^10 buckets per latent is the continuous −ELBO within 0.5 % (the
    discretization gap at 10 bits and the Monte-Carlo error of 96 images, measured 0.1 %)."""
    torch.manual_seed(5)
    model = VAE(image_shape=(1, 28, 28), latent_dim=8).eval()
    values = binary(load_embedded_mnist().images[::50][:96])
    coder, coded = round_trip(model, values, batch_size=32)
    stack = 32 * (len(coded.words) - coded.initial_words)
    assert abs(stack - coded.costs.net.sum()) <= 32 * (len(coded.batches) + 1)
    with torch.no_grad():
        elbo = model.elbo_draws(values.float(), samples=200, chunk_size=50).double().mean(dim=0)
    assert coded.costs.net.mean() == pytest.approx(-elbo.mean().item() / math.log(2), rel=5e-3)


def test_buckets_have_equal_prior_mass_and_the_posterior_table_is_its_mass_in_each():
    prior = torch.distributions.Independent(torch.distributions.Normal(torch.tensor([[0.5]]), torch.tensor([[2.0]])), 1)
    posterior = torch.distributions.Independent(
        torch.distributions.Normal(torch.tensor([[1.25]]), torch.tensor([[0.375]])), 1
    )
    latent = Latent(LayerLaw(name="z", prior=prior, posterior=posterior), rows=1, bits=4)
    table = latent.posterior_table(slice(0, 1))[0]
    inner = 0.5 + 2.0 * torch.special.ndtri(torch.arange(1, 16, dtype=torch.float64) / 16)  # μ_p + σ_p Φ⁻¹(j/K)
    edges = [-math.inf, *inner.tolist(), math.inf]
    normal = torch.distributions.Normal(torch.tensor(1.25, dtype=torch.float64), 0.375)
    cdf = normal.cdf(torch.tensor(edges, dtype=torch.float64))
    expected = cdf[1:] - cdf[:-1]
    assert table == pytest.approx(expected.numpy(), abs=1e-12)
    centres = Latent(LayerLaw(name="z", prior=prior), rows=16, bits=4).value(np.arange(16, dtype=np.int32))[:, 0]
    assert torch.distributions.Normal(0.5, 2.0).cdf(centres) == pytest.approx((np.arange(16) + 0.5) / 16, abs=1e-6)
    # Far in either tail the mass is still accurate (the upper tail as Φ(−a) − Φ(−b)).
    edges = torch.tensor([[9.0, 10.0], [-10.0, -9.0]], dtype=torch.float64)
    assert bucket_masses(edges)[:, 0].numpy() == pytest.approx([1.1285884e-19] * 2, rel=1e-6)


def test_another_thread_count_decodes_the_same_images_or_refuses():
    torch.manual_seed(6)
    model = HierarchicalVAE(image_shape=(1, 28, 28), likelihood=DiscretizedLogistic()).eval()
    coder = BitsBackCoder(model, batch_size=8)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        coded = coder.encode(DIGITS[:12].long())
        torch.set_num_threads(1)
        try:
            back = coder.decode(
                coded.words, batches=coded.batches, initial_words=coded.initial_words, checksums=coded.checksums
            )
        except CodingError:
            return  # refused in one line: never wrong images
        assert torch.equal(back, DIGITS[:12].long())
    finally:
        torch.set_num_threads(threads)


def test_another_model_never_decodes_silently():
    torch.manual_seed(7)
    coder = BitsBackCoder(VAE(image_shape=(1, 28, 28), latent_dim=8).eval())
    coded = coder.encode(binary(DIGITS[:20]))
    other = BitsBackCoder(VAE(image_shape=(1, 28, 28), latent_dim=8).eval())  # other weights
    with pytest.raises(CodingError, match="decoded to other images"):
        other.decode(coded.words, batches=coded.batches, initial_words=coded.initial_words, checksums=coded.checksums)
    with pytest.raises(CodingError, match="SHA-256 differs"):  # without the batches' checksums: the digest at the end
        other.decode(
            coded.words, batches=coded.batches, initial_words=coded.initial_words, digest_of_values=coded.digest
        )
    with pytest.raises(CodingError, match="initial bits did not come back"):  # and without it, the initial bits
        other.decode(coded.words, batches=coded.batches, initial_words=coded.initial_words)


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: VAE(image_shape=(1, 28, 28), likelihood=Gaussian()), "Gaussian likelihood is continuous"),
        (lambda: VAE(image_shape=(1, 28, 28), posterior=IAF(length=1, hidden=(16,))), "posterior .IAF"),
        (lambda: VAE(image_shape=(1, 28, 28), posterior=FullCovariance()), "posterior .full-covariance"),
        (lambda: VAE(image_shape=(1, 28, 28), prior=GaussianMixture(num_components=3)), "prior .GaussianMixture"),
        (lambda: VAE(image_shape=(1, 28, 28), prior=VampPrior(num_pseudo_inputs=4)), "prior .VampPrior"),
        (lambda: HierarchicalVAE(image_shape=(1, 28, 28), layer_flow=IAF(length=1, hidden=(8,))), "IAF posteriors"),
    ],
)
def test_a_model_the_coder_cannot_take_is_refused_in_one_line(make, words):
    with pytest.raises(ConfigError, match=words) as error:
        BitsBackCoder(make())
    assert "\n" not in str(error.value)


def test_images_of_the_wrong_kind_are_refused():
    with pytest.raises(ConfigError, match="binarize them"):
        Bernoulli().symbols(DIGITS[:2])  # 8-bit digits to a Bernoulli model
    with pytest.raises(ConfigError, match="grey levels"):
        DiscretizedLogistic().symbols(torch.full((1, 1, 2, 2), 0.5))  # between two of the 256 levels
    assert torch.equal(Bernoulli().symbols(torch.tensor([0, 255], dtype=torch.uint8)), torch.tensor([0, 1]))


def test_value_tables_are_the_likelihood_channel_by_channel():
    """Each channel's table, at the image's values, multiplies out to p(x|z) (the mixture's coupling included), and
    a table reads only the channels before its own."""
    torch.manual_seed(8)
    x = stacked_rgb(DIGITS[:6]).double() / 255
    for likelihood in (DiscretizedLogistic(), DiscretizedLogisticMixture(num_components=3), Bernoulli()):
        values = likelihood.symbols(x if likelihood.levels == 256 else (x > 0.5).double())
        unit = values.double() / (likelihood.levels - 1)
        params = 0.3 * torch.randn(2, likelihood.param_channels(3), 28, 28).double()
        tables = [likelihood.value_table(params, unit[:2], c) for c in range(3)]
        log_p = sum(t.gather(-1, values[:2, c, ..., None]).log().sum(dim=(1, 2, 3)) for c, t in enumerate(tables))
        # The logistics' tables come from a float32 CDF (2⁻²⁴ resolution, the coder's): 10⁻⁵ of the total.
        assert log_p == pytest.approx(likelihood.log_prob(params, unit[:2]), rel=1e-5)
        for c in range(3):  # what a decoder has when it reaches channel c: the channels before it, nothing after
            scrambled = unit[:2].clone()
            scrambled[:, c:] = torch.rand_like(scrambled[:, c:])
            assert torch.equal(likelihood.value_table(params, scrambled, c), tables[c])


def test_the_file_refuses_damage_in_one_line():
    data = Container(header={"format": FORMAT, "x": 1}, words=np.arange(5, dtype=np.uint32)).to_bytes()
    back = Container.from_bytes(data, "f.vae")
    assert back.header["x"] == 1 and back.words.tolist() == [0, 1, 2, 3, 4]
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    cases = {
        "cut short": data[:8],
        "damaged or cut short": data[:-5],
        "damaged or cut short ": bytes(flipped),
        "not a file written by vae compress": b"PK\x03\x04" + data[4:],
        "later version": data[:5] + bytes([FORMAT + 1]) + data[6:],
    }
    for words, damaged in cases.items():
        with pytest.raises(DataError, match=words.strip()):
            Container.from_bytes(damaged, "f.vae")


def test_standard_compressors_are_measured_on_the_raw_values():
    sizes = baseline_bits(binary(DIGITS), levels=2)
    assert set(sizes) == {"gzip", "bz2", "lzma", "png"}
    raw = 48 * 784  # bit-packed: 1 bit per pixel before compression
    assert all(0 < bits < 2 * raw for name, bits in sizes.items() if name != "png")
    assert baseline_bits(DIGITS.long(), levels=256)["lzma"] > sizes["lzma"]


@pytest.mark.parametrize(
    ("mode", "channels", "kept"),
    [
        ("1", 1, True),
        ("L", 1, True),
        ("RGB", 3, True),
        ("L", 3, False),  # grey to a colour model: refused, not converted
        ("RGB", 1, False),
        ("RGBA", 3, False),  # alpha would be lost
        ("LA", 1, False),
        ("P", 3, False),  # a palette: converting changes the file's values
        ("I;16", 1, False),  # 16-bit: 8-bit values would not come back
        ("I", 1, False),
        ("CMYK", 3, False),
    ],
)
def test_image_files_are_read_exactly_or_refused(tmp_path, mode, channels, kept):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
    image = Image.fromarray(array).convert(mode) if mode not in ("I;16", "I") else None
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (28, 28), dtype=np.uint16))
    elif mode == "I":
        image = Image.fromarray(rng.integers(0, 2**20, (28, 28)).astype(np.int32))
    suffix = ".tif" if mode in ("CMYK", "I") else ".png"
    image.save(tmp_path / f"a{suffix}")
    if not kept:
        with pytest.raises(DataError, match="a" + suffix):
            read_images(tmp_path, channels)
        return
    read = read_images(tmp_path, channels)
    expected = np.asarray(Image.open(tmp_path / f"a{suffix}").convert("L" if channels == 1 else "RGB"))
    assert read.names == [f"a{suffix}"] and read.values.dtype == torch.uint8
    assert np.array_equal(rearrange(read.values[0].numpy(), "c h w -> h w c").squeeze(), expected)


def test_written_images_come_back_as_read_and_stay_inside_the_output(tmp_path):
    binary_rgb = binary(stacked_rgb(DIGITS[:6]))  # 2 colour images of 0/1 values
    write_images(tmp_path / "out", binary_rgb, levels=2, names=None, layout="nchw", scale=255)
    read = read_images(tmp_path / "out", 3)
    assert torch.equal(read.values.long(), binary_rgb * 255)  # every channel, at 0 and 255
    for name in ("../escaped.png", "/tmp/absolute.png"):
        with pytest.raises(DataError, match="outside the output folder"):
            write_images(tmp_path / "bad", binary_rgb[:1], levels=2, names=[name], layout="nchw", scale=255)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "escaped.png").exists()


def test_a_model_with_non_finite_numbers_is_refused_in_one_line():
    model = VAE(image_shape=(1, 28, 28), latent_dim=4).eval()
    with torch.no_grad():
        next(model.network.decoder.parameters()).fill_(float("nan"))
    with pytest.raises(CodingError, match="non-finite probabilities"):
        BitsBackCoder(model).encode(binary(DIGITS[:2]))
