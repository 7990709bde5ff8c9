"""Tests of the digits experiment's parts: data, networks, classifiers, checkpoints, the accuracy
and Fréchet-distance metrics, the step-size search, and the quick experiment end to end."""
import argparse
import math

import numpy as np
import pytest
import torch

import compose
from compose import metrics
from compose.components import Classifier, EnergyModel, ScoreModel
from compose.experiments import digits
from compose.models.checkpoints import load_checkpoint, save_checkpoint
from compose.models.classifier_training import classifier_accuracy, train_classifier
from compose.models.data import IMAGE_SHAPE, digits_split, image_sampler, load_digit_images
from compose.models.training import predict_noise
from compose.models.unet import DigitClassifier, NoisyClassifier, SmallUNet
from compose.tuning import BANDS, acceptance_of, tune_step_size

T = 10


def seeded(cls, seed=0, **config):
    torch.manual_seed(seed)  # tests only: the library never seeds globally
    return cls(**config)


@pytest.fixture(scope="module")
def split():
    return digits_split()


# -- data -----------------------------------------------------------------------------------
def test_images_are_scaled_to_minus_one_one_with_a_channel_axis():
    images, labels = load_digit_images()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float32
    assert labels.shape == (1797,) and labels.dtype == torch.int64
    assert float(images.min()) == -1.0 and float(images.max()) == 1.0
    # pixels 0..16 map to p/8 − 1: every value is a multiple of 1/8
    assert torch.equal(images * 8, torch.round(images * 8))
    assert set(labels.tolist()) == set(range(10))


def test_split_is_fixed_disjoint_stratified_and_seeded(split):
    assert split.train_images.shape == (1347, 1, 8, 8) and split.test_images.shape == (450, 1, 8, 8)
    images, labels = load_digit_images()
    # disjoint and complete: every image lands on exactly one side
    rows = {tuple(x.flatten().tolist()) + (int(y),) for x, y in zip(images, labels)}
    train = {tuple(x.flatten().tolist()) + (int(y),) for x, y in zip(split.train_images, split.train_labels)}
    test = {tuple(x.flatten().tolist()) + (int(y),) for x, y in zip(split.test_images, split.test_labels)}
    assert train | test <= rows and len(split.train_images) + len(split.test_images) == 1797
    counts = torch.bincount(split.test_labels, minlength=10)
    assert int(counts.min()) >= 43 and int(counts.max()) <= 47          # ≈ 25% of each class
    again = digits_split()
    assert torch.equal(again.test_images, split.test_images)
    other = digits_split(seed=1)
    assert not torch.equal(other.test_labels, split.test_labels)
    with pytest.raises(ValueError, match="test_fraction"):
        digits_split(test_fraction=1.0)


def test_sampler_draws_training_rows_reproducibly(split):
    data = split.sampler()
    a = data(64, torch.Generator().manual_seed(3))
    b = data(64, torch.Generator().manual_seed(3))
    assert a.shape == (64, 1, 8, 8) and torch.equal(a, b)
    x, y = split.sampler(labelled=True)(32, torch.Generator().manual_seed(3))
    assert x.shape == (32, 1, 8, 8) and y.shape == (32,)
    with pytest.raises(ValueError, match="labels"):
        image_sampler(split.train_images, split.train_labels[:5])
    with pytest.raises(ValueError, match="n:"):
        data(0, None)


# -- networks -------------------------------------------------------------------------------
def test_unet_shapes_zero_output_at_init_and_config_rebuilds():
    net = seeded(SmallUNet, T=T, base=8, embed=16)
    x, t = torch.randn(5, 1, 8, 8), torch.randint(1, T + 1, (5,))
    assert torch.equal(net(x, t), torch.zeros_like(x))
    with torch.no_grad():                                 # leave the zero initialisation
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    out = net(x, t)
    assert out.shape == x.shape and out.abs().sum() > 0
    twin = SmallUNet(**net.config())
    twin.load_state_dict(net.state_dict())
    assert torch.equal(twin(x, t), out)
    deeper = seeded(SmallUNet, T=T, base=8, embed=16, mults=(1, 2, 2), blocks=2)
    assert deeper(x, t).shape == x.shape
    with pytest.raises(ValueError, match=r"x: expected shape \(N, 1, 8, 8\)"):
        net(torch.randn(2, 1, 7, 7), t[:2])
    with pytest.raises(ValueError, match="levels must lie in 1..10"):
        net(x, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="size"):
        SmallUNet(size=6, mults=(1, 2, 2))


def test_classifier_networks_give_logits_and_features():
    noisy = seeded(NoisyClassifier, T=T, base=8, embed=16)
    x = torch.randn(4, 1, 8, 8)
    assert noisy(x, torch.full((4,), 3)).shape == (4, 10)
    clean = seeded(DigitClassifier, width=8, features=16)
    assert clean.features(x).shape == (4, 16) and clean(x).shape == (4, 10)


def perturbed_unet(dtype=torch.float64):
    net = seeded(SmallUNet, T=T, base=8, embed=16).to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, dtype=dtype, generator=torch.Generator().manual_seed(p.numel())))
    return net.eval()


def test_energy_unet_score_is_minus_grad_g_over_sigma():
    """EnergyModel(SmallUNet): log p = −g/σ with g = ‖f − x‖²; its score matches the central
    difference of the log-density along random directions, and ε = ∇g matches predict_noise."""
    schedule = compose.Schedule.cosine(T)
    net = perturbed_unet()
    model = EnergyModel(net, schedule, name="e", event_shape=IMAGE_SHAPE)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64, generator=g)
    v = torch.randn(x.shape, dtype=torch.float64, generator=g)
    t, h = 4, 1e-5
    log_p, score = model.log_density_and_score(x, t)
    plus, minus = model.log_density(x + h * v, t), model.log_density(x - h * v, t)
    directional = (plus - minus) / (2 * h)
    assert torch.allclose((score * v).flatten(1).sum(1), directional, rtol=1e-6, atol=1e-8)
    f = net(x, torch.full((3,), t))
    assert torch.allclose(log_p, -(f - x).pow(2).flatten(1).sum(1) / schedule.sigma(t))
    eps = predict_noise(net, x, torch.full((3,), t), "energy")
    assert torch.allclose(score, -eps / schedule.sigma(t))


# -- classifiers ----------------------------------------------------------------------------
def test_evaluation_classifier_learns_the_digits_quickly(split):
    net = seeded(DigitClassifier, width=16, features=32)
    before = classifier_accuracy(net, split.test_images, split.test_labels)
    result = train_classifier(net, split.sampler(labelled=True), steps=300, batch_size=64,
                              lr=3e-3, generator=torch.Generator().manual_seed(0), progress=False)
    after = classifier_accuracy(result.net, split.test_images, split.test_labels)
    assert before < 0.3 and after > 0.8                     # 0.90 at these settings
    assert len(result.losses) == 300 and result.losses[-1] < result.losses[0]
    assert not any(p.requires_grad for p in result.net.parameters())


def test_noise_aware_classifier_trains_on_noised_images(split):
    schedule = compose.Schedule.cosine(T)
    net = seeded(NoisyClassifier, T=T, base=8, embed=16)
    result = train_classifier(net, split.sampler(labelled=True), schedule=schedule, steps=150,
                              batch_size=64, lr=3e-3, generator=torch.Generator().manual_seed(0),
                              progress=False)
    g = torch.Generator().manual_seed(1)
    low = classifier_accuracy(result.net, split.test_images, split.test_labels, schedule, 1, g)
    high = classifier_accuracy(result.net, split.test_images, split.test_labels, schedule, T, g)
    assert low > 0.5 and high < 0.3          # at t = T the image is noise: chance is 0.1


# -- checkpoints ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["score", "energy", "classifier-noisy", "classifier-clean"])
def test_checkpoint_round_trip(tmp_path, kind):
    schedule = compose.Schedule.cosine(T)
    if kind.startswith("classifier"):
        net = (seeded(NoisyClassifier, T=T, base=8, embed=16) if kind.endswith("noisy")
               else seeded(DigitClassifier, width=8, features=16))
        stored_as = "classifier"
    else:
        net, stored_as = perturbed_unet(torch.float32), kind
    path = tmp_path / "net.pt"
    save_checkpoint(path, net, schedule, stored_as, extra={"note": "test"})
    loaded, stored_schedule, what = load_checkpoint(path, schedule)
    assert type(loaded) is type(net) and what == stored_as and stored_schedule.same_as(schedule)
    x = torch.randn(3, 1, 8, 8)
    args = () if isinstance(net, DigitClassifier) else (torch.full((3,), 2),)
    assert torch.equal(loaded(x, *args), net.eval()(x, *args))


def test_checkpoint_mismatches_are_clear_value_errors(tmp_path):
    schedule = compose.Schedule.cosine(T)
    net = seeded(SmallUNet, T=T, base=8, embed=16)
    path = tmp_path / "unet.pt"
    save_checkpoint(path, net, schedule, "score")
    with pytest.raises(ValueError, match=r"trained with Schedule.cosine\(T=10\) but "
                                         r"Schedule.linear\(T=30\) was given"):
        load_checkpoint(path, compose.Schedule.linear(30))
    # wanted another image shape or width: refused by the experiment's loader
    with pytest.raises(ValueError, match="does not match.*'size': \\(8, 16\\)"):
        digits.load_model(path, schedule, SmallUNet, dict(net.config(), size=16))
    with pytest.raises(ValueError, match="holds a SmallUNet, expected a DigitClassifier"):
        digits.load_model(path, schedule, DigitClassifier)
    # weights of one shape stored under the config of another
    data = torch.load(path, weights_only=True)
    data["architecture"]["config"]["base"] = 16
    torch.save(data, path)
    with pytest.raises(ValueError, match="stored weights do not fit SmallUNet"):
        load_checkpoint(path, schedule)
    with pytest.raises(ValueError, match="parameterisation"):
        save_checkpoint(tmp_path / "x.pt", net, schedule, "eps")


# -- metrics --------------------------------------------------------------------------------
def test_accuracy_on_hand_made_logits():
    # probabilities of the requested class: softmax of [log 0.7, log 0.3] → 0.7 etc.
    logits = torch.log(torch.tensor([[0.7, 0.3], [0.5, 0.5], [0.49, 0.51], [0.2, 0.8]]))
    classify = lambda x: logits[: x.shape[0]]
    images = torch.zeros(4, 1, 8, 8)
    assert metrics.accuracy(classify, images, [0, 0, 0, 1]) == pytest.approx(3 / 4)  # 0.5 counts
    assert metrics.accuracy(classify, images, torch.tensor([1, 1, 1, 0])) == pytest.approx(2 / 4)
    nan = lambda x: torch.full((x.shape[0], 2), math.nan)
    assert metrics.accuracy(nan, images, [0, 0, 0, 0]) == 0.0
    with pytest.raises(ValueError, match="one label per image"):
        metrics.accuracy(classify, images, [0, 1])
    with pytest.raises(ValueError, match="0..1"):
        metrics.accuracy(classify, images, [0, 1, 2, 0])


def exact_moments(mean, cov, n, seed):
    """n points whose sample mean and covariance (ddof 1) are exactly `mean` and `cov`."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T   # sample cov = I
    return mean + z @ np.linalg.cholesky(cov).T


def test_frechet_distance_of_identical_sets_is_zero():
    x = np.random.default_rng(0).normal(size=(300, 6))
    assert metrics.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    assert metrics.frechet_distance(torch.tensor(x), torch.tensor(x[::-1].copy())) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_matches_the_closed_form():
    # Commuting covariances: d² = ‖m_a − m_b‖² + Σ_i (√λ_ai − √λ_bi)² in a shared eigenbasis.
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    la, lb = np.array([1.0, 4.0, 0.25, 9.0]), np.array([4.0, 1.0, 1.0, 1.0])
    ma, mb = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    cov_a, cov_b = q @ np.diag(la) @ q.T, q @ np.diag(lb) @ q.T
    closed = np.sum((ma - mb) ** 2) + np.sum((np.sqrt(la) - np.sqrt(lb)) ** 2)   # 5 + 6.25
    assert closed == pytest.approx(11.25)
    assert metrics.gaussian_frechet_distance(ma, cov_a, mb, cov_b) == pytest.approx(closed, rel=1e-9)
    fa, fb = exact_moments(ma, cov_a, 500, 2), exact_moments(mb, cov_b, 300, 3)
    assert metrics.frechet_distance(fa, fb) == pytest.approx(closed, rel=1e-8)
    # Non-commuting: against the trace formula with an independent square root (eigh).
    cov_c = np.array([[2.0, 0.9, 0, 0], [0.9, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 0.5]])
    w, v = np.linalg.eigh(cov_a)
    ra = v @ np.diag(np.sqrt(w)) @ v.T
    cross = np.linalg.eigvalsh(ra @ cov_c @ ra)                    # tr √(A C) = Σ √eig(√A C √A)
    expected = np.sum((ma - mb) ** 2) + np.trace(cov_a) + np.trace(cov_c) - 2 * np.sum(np.sqrt(cross))
    assert metrics.gaussian_frechet_distance(ma, cov_a, mb, cov_c) == pytest.approx(expected, rel=1e-9)
    # a pure translation costs ‖shift‖²
    x = np.random.default_rng(4).normal(size=(200, 3))
    assert metrics.frechet_distance(x, x + np.array([0.0, 3.0, 4.0])) == pytest.approx(25.0, rel=1e-9)
    with pytest.raises(ValueError, match="dimension"):
        metrics.frechet_distance(x, x[:, :2])
    assert math.isnan(metrics.frechet_distance(np.where(x > 2, np.nan, x), x))


# -- the step-size search -------------------------------------------------------------------
@pytest.fixture(scope="module")
def gaussian_target():
    """N(0.5·1, 0.3²) (score-only, Δ on the line) times N(−0.2·1, 0.5²) in 4 dimensions."""
    schedule = compose.Schedule.cosine(20)
    p = compose.GaussianMixture([[0.5] * 4], 0.3, schedule=schedule, name="p")
    q = compose.GaussianMixture([[-0.2] * 4], 0.5, schedule=schedule, name="q")
    return compose.compile(ScoreModel.from_analytic(p, "p_score") * q, points=2)


@pytest.mark.parametrize("family", ["MALA", "HMC"])
def test_tuning_finds_a_step_inside_the_band(gaussian_target, family):
    make = (lambda s: compose.MALA(s)) if family == "MALA" else (lambda s: compose.HMC(s, num_leapfrog=3))
    found = tune_step_size(gaussian_target, make, a=50.0, num_chains=64, steps_per_level=2,
                           max_trials=12)
    lo, hi = BANDS[family]
    assert found.converged and lo <= found.acceptance <= hi
    assert len(found.trials) >= 3                # a = 50 is far too large: it had to search
    assert found.step_size == compose.PowerLaw(found.a, 1.0)
    # an independent, larger run at the found step size: acceptance inside the band
    acc, per_level = acceptance_of(gaussian_target, make(found.step_size), 500, 2, seed=11)
    assert lo <= acc <= hi and len(per_level) == 20


def test_tuning_chooses_b_and_reports_failure(gaussian_target):
    make = lambda s: compose.MALA(s)
    found = tune_step_size(gaussian_target, make, b=(0.5, 1.0, 2.0), num_chains=32,
                           steps_per_level=1)
    assert found.converged and found.b in (0.5, 1.0, 2.0)
    assert {t.b for t in found.trials} == {0.5, 1.0, 2.0}          # the whole search is kept
    chosen = [t for t in found.trials if t.b == found.b and t.a == found.a]
    assert chosen and chosen[-1].acceptance == found.acceptance
    impossible = tune_step_size(gaussian_target, make, band=(0.999, 1.0), a=1.0,
                                num_chains=16, max_trials=2)
    assert not impossible.converged and len(impossible.trials) == 2
    with pytest.raises(ValueError, match="unadjusted"):
        tune_step_size(gaussian_target, lambda s: compose.ULA(s))
    with pytest.raises(ValueError, match="band"):
        tune_step_size(gaussian_target, make, band=(0.9, 0.5))


# -- guidance with one class per chain --------------------------------------------------------
def test_requested_class_guidance_equals_per_class_guidance():
    """Rotating each row's logits (RequestedClass) and asking for class 0 is guidance towards
    that row's class. The two computations are not the same: log-softmax sums the C logits of a
    row in another order, so they agree to rounding, not bit for bit. The bound: a sum of C terms
    in any order is within C·eps of exact relative to its magnitude, forward and backward, plus
    one rounding when the model's score is added (eps of float32)."""
    schedule = compose.Schedule.cosine(T)
    model = ScoreModel(perturbed_unet(torch.float32), schedule, name="model", event_shape=IMAGE_SHAPE)
    guide = seeded(NoisyClassifier, T=T, base=8, embed=16).eval()
    labels = torch.tensor([3, 0, 9, 3])
    scale, t, classes = 2.0, 5, 10
    spec = digits.SamplerSpec("LA", "mala", "line", 2)
    joint = digits.guided_target(model, guide, labels, scale, schedule, spec)
    x = torch.randn(4, 1, 8, 8)
    clf = Classifier(guide, schedule, name="plain")
    both = joint.evaluate(x, t)
    eps = torch.finfo(torch.float32).eps
    # magnitudes: the model's score, and every class's log-probability and gradient (the scale of
    # the Jacobian of the logits that the backward pass sums over)
    model_score = model.score(x, t).detach().abs()
    per_class = [clf.log_prob_and_grad(x, t, k) for k in range(classes)]
    log_prob_size = torch.stack([lp for lp, _ in per_class]).abs().amax(0)                  # (N,)
    grad_size = torch.stack([g for _, g in per_class]).abs().amax(0)                       # (N, ...)
    with torch.no_grad():
        logit_size = guide(x, torch.full((4,), t)).abs().amax(1) + math.log(classes)
    score_tol = (classes + 1) * eps * (model_score + scale * grad_size)
    log_density_tol = (classes + 1) * eps * scale * (logit_size + log_prob_size)
    for i, k in enumerate(labels.tolist()):
        single = compose.compile(model.guide(clf.condition(k), scale=scale)).evaluate(x, t)
        assert bool(((both.score[i] - single.score[i]).abs() <= score_tol[i]).all())
        assert float((both.log_density[i] - single.log_density[i]).abs()) <= float(log_density_tol[i])
        # the tolerance is far below what a wrong class changes: the comparison can fail
        wrong = compose.compile(model.guide(clf.condition((k + 1) % classes), scale=scale)).evaluate(x, t)
        assert float((wrong.score[i] - both.score[i]).abs().max()) > 100 * float(score_tol[i].max())
        assert float((wrong.log_density[i] - both.log_density[i]).abs()) > 100 * float(log_density_tol[i])
    with pytest.raises(ValueError, match="RequestedClass: got 2 rows"):
        joint.score(x[:2], t)


# -- the experiment end to end ----------------------------------------------------------------
def test_quick_experiment_end_to_end(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    digits.register(parser.add_subparsers(dest="command"))
    out = tmp_path / "digits"
    args = parser.parse_args(["digits", "--out", str(out), "--quick", "--seeds", "1",
                              "--scale", "2", "--no-progress"])
    capsys.readouterr()
    assert args.func(args) == 0
    assert capsys.readouterr().out.endswith("results.md  (a smoke test: --quick numbers mean nothing)\n")
    for name in ("results.md", "results.json", "samples_score.png", "samples_energy.png",
                 "acceptance.png", "samples_seed0.npz", "checkpoints/eval.pt"):
        assert (out / name).exists(), name
    import json
    results = json.loads((out / "results.json").read_text())
    assert results["scale"] == 2.0
    for param in ("score", "energy"):
        rows = results["summary"][param]
        assert list(rows) == list(digits.SAMPLER_NAMES)
        for name, e in rows.items():
            assert 0.0 <= e["accuracy"][0] <= 1.0 and math.isfinite(e["frechet"][0])
    runs = [r for r in results["runs"] if r["sampler"] == "LA-8-line"]
    assert all(len(r["per_level"]) == digits.QUICK.T for r in runs)
    score_la = next(r for r in runs if r["parameterisation"] == "score")
    energy_la = next(r for r in runs if r["parameterisation"] == "energy")
    # per level: 1 at the start + K · (1 + 8 line points) for the score model; no points for energy
    assert score_la["evaluations"] == digits.QUICK.T * (1 + 9)
    assert energy_la["evaluations"] == digits.QUICK.T * 2
    text = (out / "results.md").read_text()
    assert "| LA-8-line |" in text and "λ = 2" in text and "Against the reverse process" in text
    assert results["smoke_test"] and text.index("SMOKE TEST (--quick)") < text.index("| sampler")
    # a second call reuses every checkpoint
    split = digits_split()
    _, info = digits.train_models(out, digits.QUICK, split, progress=False)
    assert all(entry["reused"] for entry in info)
    # an unreadable checkpoint counts as absent: that model is retrained, and the run says so
    eval_path = out / "checkpoints" / "eval.pt"
    eval_path.write_bytes(eval_path.read_bytes()[:100])
    _, info = digits.train_models(out, digits.QUICK, split, progress=False)
    assert [entry["reused"] for entry in info] == [True, True, True, False]
    assert f"digits: eval: {eval_path}: truncated or damaged" in capsys.readouterr().err
