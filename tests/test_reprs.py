"""What a user reads: short reprs, the per-level table, per-chain acceptance, one convention for
"no acceptance", plans that name their counts and their schedule, Pyro's summary over the batch
of chains, smoke-test labels, and set-up instructions that say what they install."""
import dataclasses
import json
import math
import re
import subprocess
from pathlib import Path

import pytest
import torch
from pyro.infer import MCMC
from pyro.ops.stats import effective_sample_size, split_gelman_rubin

import compose
from compose.experiments import reporting
from compose.sampler import ACCEPTANCE_QUANTILES, format_rate
from conftest import gaussian

ROOT = Path(__file__).resolve().parents[1]


def _holey(schedule, bound=0.6):
    """An exact Gaussian ε-prediction that is NaN where x₀ > bound: moves landing there are
    divergences (Δ is NaN), which an adjusted kernel rejects."""
    def net(x, t):
        return torch.where(x[:, :1] > bound, torch.full_like(x, float("nan")), 0.5 * x)
    return compose.ScoreModel(net, schedule, name="holey", event_shape=(2,))


@pytest.fixture(scope="module")
def mala_run():
    schedule = compose.Schedule.cosine(30)
    target = compose.compile(_holey(schedule) * gaussian(schedule, [0.0, 0.0], 1.0, "g"))
    return compose.sample(target, compose.MALA(0.3), 50, steps_per_level=4,
                          generator=torch.Generator().manual_seed(3), progress=False)


# -- reprs and tables -------------------------------------------------------------------------
def test_result_and_diagnostics_print_as_one_short_line(mala_run):
    text, diagnostics = repr(mala_run), repr(mala_run.diagnostics)
    assert str(mala_run) == text and "\n" not in text + diagnostics
    assert len(text) < 200 and len(diagnostics) < 250          # were 5,345 and 3,900 characters
    assert text.startswith("SampleResult(samples (50, 2) float32 on cpu, MALA, 30 levels, ")
    assert f"acceptance {mala_run.diagnostics.mean_acceptance():.3f}" in text
    assert "tensor(" not in text and "LevelDiagnostics" not in diagnostics
    assert diagnostics.startswith("Diagnostics(MALA, 50 chains, levels 30..1, 120 steps")
    assert f"divergences {mala_run.diagnostics.divergences}" in diagnostics


def test_table_has_a_row_per_level_and_elides_the_middle(mala_run):
    d = mala_run.diagnostics
    full = d.table(max_rows=None).splitlines()
    assert full[0].split() == ["level", "steps", "step", "size", "accept", "q10", "median",
                               "q90", "mean", "|Δ|", "div.", "evals/sample", "seconds"]
    assert len(full) == 1 + 30
    for line, level in zip(full[1:], d.levels):
        cells = line.split()
        assert int(cells[0]) == level.level and int(cells[1]) == level.steps == 4
        assert cells[3] == f"{level.acceptance:.3f}"
        assert cells[4:7] == [f"{level.acceptance_quantiles[k]:.3f}" for k in ("q10", "median", "q90")]
        assert int(cells[8]) == level.divergences                       # divergences per level
        assert cells[9] == "5"                                          # 1 + K evaluations
    assert sum(lv.divergences > 0 for lv in d.levels) > 0               # the test sees some
    short = d.table(max_rows=6).splitlines()
    assert len(short) == 1 + 6 + 1 and "24 levels not shown" in short[4]
    assert short[1:4] == full[1:4] and short[5:] == full[-3:]
    assert max(len(line) for line in full) < 100
    with pytest.raises(ValueError, match="max_rows: must be an integer ≥ 2 or None"):
        d.table(max_rows=1)


def test_summary_states_the_totals_then_the_table(mala_run):
    d = mala_run.diagnostics
    text = d.summary(max_rows=4)
    lines = text.splitlines()
    assert lines[0] == "MALA: 50 chains, 30 levels, 120 kernel steps per chain"
    rates = [lv.acceptance for lv in d.levels]
    assert lines[1] == (f"acceptance {d.mean_acceptance():.3f} (mean over levels; per level from "
                        f"{min(rates):.3f} to {max(rates):.3f})")
    assert lines[2].startswith(f"divergences {d.divergences} (at ")
    assert lines[3] == "evaluations per sample: g 150, holey 150"
    assert text.endswith(d.table(max_rows=4))


# -- per-chain acceptance ---------------------------------------------------------------------
def test_chain_acceptance_agrees_with_the_level_figures(mala_run):
    d = mala_run.diagnostics
    rates = d.chain_acceptance()
    assert rates.shape == (30, 50) and rates.dtype == torch.float64
    # each chain made 4 moves per level: rates are multiples of 1/4
    assert torch.equal(rates * 4, (rates * 4).round())
    for row, level in zip(rates, d.levels):
        assert row.mean().item() == pytest.approx(level.acceptance, abs=1e-12)
        expected = torch.quantile(row, torch.tensor(list(ACCEPTANCE_QUANTILES.values()),
                                                    dtype=torch.float64))
        assert [level.acceptance_quantiles[k] for k in ACCEPTANCE_QUANTILES] == \
            pytest.approx(expected.tolist(), abs=1e-12)
    assert len(set(rates[-1].tolist())) > 1        # chains differ: the mean alone hides that


def test_the_sampler_reads_the_host_once_per_level(monkeypatch):
    """The quantiles and per-chain counts add no host read: compose.sampler itself turns a
    tensor into Python numbers once per level (counted at every way of doing so)."""
    import sys
    reads = []
    for name in ("tolist", "item", "__bool__", "__float__", "__int__", "cpu", "numpy"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            if sys._getframe(1).f_globals.get("__name__") == "compose.sampler":
                reads.append(_name)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, spy)
    schedule = compose.Schedule.cosine(7)
    target = compose.compile(gaussian(schedule, [0.0, 0.0], 1.0, "g"))
    result = compose.sample(target, compose.MALA(0.1), 9, steps_per_level=3,
                            generator=torch.Generator().manual_seed(0), progress=False)
    assert reads == ["tolist"] * 7
    result.diagnostics.chain_acceptance()                          # on request: one copy each
    assert reads[7:] == ["cpu"] * 7


def test_per_chain_counts_stay_out_of_saved_data(mala_run):
    level = mala_run.diagnostics.levels[0]
    assert isinstance(level.chain_accepted, torch.Tensor) and level.chain_accepted.shape == (50,)
    assert level.chain_accepted.dtype == torch.uint8                 # K < 256: a byte per chain
    assert "chain_accepted" not in dataclasses.asdict(level)
    data = mala_run.diagnostics.to_dict()
    assert set(data["levels"][0]["acceptance_quantiles"]) == set(ACCEPTANCE_QUANTILES)
    json.dumps(data)
    # the same counts when the run is driven level by level
    schedule = compose.Schedule.cosine(30)
    target = compose.compile(_holey(schedule) * gaussian(schedule, [0.0, 0.0], 1.0, "g"))
    g = torch.Generator().manual_seed(3)
    x = torch.randn((50, 2), generator=g)                 # as compose.sample draws it
    steps = list(compose.sampler.anneal(target, compose.MALA(0.3), x, 4, generator=g))
    assert torch.equal(steps[0].diagnostics.chain_accepted, level.chain_accepted)


# -- one convention for "no acceptance" -------------------------------------------------------
@pytest.mark.parametrize("kernel, reverse", [(lambda: compose.ULA(0.01), False),
                                             (lambda: compose.HMC(0.05, 2, adjusted=False), False),
                                             (lambda: None, True)],
                         ids=["ULA", "U-HMC", "Reverse"])
def test_samplers_that_reject_nothing_have_no_acceptance(kernel, reverse):
    schedule = compose.Schedule.cosine(8)
    target = compose.compile(gaussian(schedule, [0.0, 0.0], 1.0, "g"))
    result = compose.sample(target, kernel(), 6, steps_per_level=2, reverse_step=reverse,
                            generator=torch.Generator().manual_seed(0), progress=False)
    d = result.diagnostics
    assert all(math.isnan(lv.acceptance) for lv in d.levels)           # data: NaN (was 1.0)
    assert all(math.isnan(v) for lv in d.levels for v in lv.acceptance_quantiles.values())
    assert all(math.isnan(lv.mean_abs_log_ratio) for lv in d.levels)   # Δ never computed
    assert math.isnan(d.mean_acceptance()) and torch.isnan(d.chain_acceptance()).all()
    assert "acceptance —" in repr(d) and "acceptance —" in repr(result)  # text: —
    for line in d.table(max_rows=None).splitlines()[1:]:
        assert line.split()[3:7] == ["—"] * 4


def test_the_pyro_adapter_follows_the_same_convention():
    schedule = compose.Schedule.cosine(8)
    target = compose.compile(gaussian(schedule, [0.0, 0.0], 1.0, "g"))
    kernel = compose.ULA(0.01).at_level(target, 3, torch.Generator().manual_seed(0))
    mcmc = MCMC(kernel, num_samples=4, warmup_steps=1, initial_params={"x": torch.zeros(5, 2)},
                disable_progbar=True)
    mcmc.run()
    assert math.isnan(mcmc.diagnostics()["acceptance rate"]["chain 0"])
    assert kernel.logging()["acc. rate"] == "nan"
    assert "acceptance rate —" in compose.kernels.batch_summary(mcmc)


def test_one_formatter_for_rates():
    assert format_rate(0.73456) == "0.735" and format_rate(1.0, 2) == "1.00"
    assert format_rate(math.nan) == format_rate(None) == "—"
    assert reporting.format_acceptance(math.nan) == "—"
    assert reporting.format_mean_std((math.nan, math.nan), 3) == "—"


def test_clipping_has_a_place_in_the_diagnostics(mala_run):
    d = dataclasses.replace(mala_run.diagnostics)
    assert d.clipped is None and "clipped" not in repr(d) and "clipped" not in d.to_dict()
    d.clipped = 0.0125                       # set by whatever clips samples to the data range
    assert "clipped 1.25%" in repr(d) and d.to_dict()["clipped"] == 0.0125
    assert "clipped to the data range: 1.25% of values" in d.summary()


# -- plans ------------------------------------------------------------------------------------
def _score(schedule, name="sc"):
    return compose.ScoreModel(lambda x, t: 0.5 * x, schedule, name=name, event_shape=(2,))


def test_plan_totals_name_what_they_count():
    schedule = compose.Schedule.cosine(10)
    target = compose.compile(_score(schedule), path="line", points=3, chunk_rows=3)
    plan = target.plan_for(compose.MALA(1e-3), steps_per_level=2, num_samples=4)
    t = plan.totals
    assert "calls_per_sample" not in t                                 # it counted the run
    # per chain: 1 + 2 · (1 + 3) evaluations per level; calls: the whole batch, chunks of 3 rows
    assert (t["per_step"], t["per_level"], t["per_sample"]) == (4, 9, 90)
    calls_level = sum(c.per_level for c in plan.terms[0].calls)
    assert t["calls_per_level"] == calls_level and t["calls_per_run"] == 10 * calls_level
    more = compose.compile(_score(schedule), path="line", points=3).plan_for(
        compose.MALA(1e-3), 2, 400)
    fewer = compose.compile(_score(schedule), path="line", points=3).plan_for(
        compose.MALA(1e-3), 2, 4)
    assert more.totals["calls_per_run"] == fewer.totals["calls_per_run"]  # not per chain
    assert more.totals["per_sample"] == fewer.totals["per_sample"]
    lines = str(plan).splitlines()
    assert lines[3] == "  network evaluations per chain, all terms: 4 per MCMC step, 9 per level, 90 per sample"
    assert lines[4] == (f"  network calls of the whole run (each on a batch of chains): "
                        f"{t['calls_per_step']} per MCMC step, {calls_level} per level, "
                        f"{t['calls_per_run']} in all")
    varying = target.plan_for(compose.MALA(1e-3), [1] * 5 + [2] * 5, 4).totals
    assert varying["calls_per_run"] == 5 * calls_level + 5 * target.plan_for(
        compose.MALA(1e-3), 1, 4).totals["calls_per_level"]


def test_a_long_schedule_with_mcmc_points_at_levels():
    schedule = compose.Schedule.linear(1000)
    target = compose.compile(_score(schedule), path="line", points=3)
    text = str(target.plan_for(compose.MALA(1e-3), 10, 4))
    assert ("  note: 1000 levels with MCMC steps cost 41,000 network evaluations per sample; "
            "sample on fewer levels with levels=") in text
    respaced = compose.compile(_score(schedule), path="line", points=3, levels=50)
    assert "note:" not in str(respaced.plan_for(compose.MALA(1e-3), 10, 4))
    assert "note:" not in str(target.plan_for(None, 0, 4, reverse_step=True))


def test_counts_of_one_are_singular():
    schedule = compose.Schedule.cosine(5)
    target = compose.compile(gaussian(schedule, [0.0, 0.0], 1.0, "g"))
    text = str(target.plan_for(compose.HMC(0.1, num_leapfrog=1), 1, 1))
    assert "sampler HMC: 1 step per level of 1 leapfrog step, no reverse step, 1 chain" in text
    assert "2 steps per level of 3 leapfrog steps, no reverse step, 2 chains" in str(
        target.plan_for(compose.HMC(0.1, num_leapfrog=3), 2, 2))
    one = compose.compile(gaussian(compose.Schedule.cosine(1), [0.0, 0.0], 1.0, "g"))
    assert "T = 1 level, event shape" in str(one.plan)
    result = compose.sample(one, compose.MALA(0.1), 1, steps_per_level=1, progress=False,
                            generator=torch.Generator().manual_seed(0))
    assert repr(result.diagnostics).startswith("Diagnostics(MALA, 1 chain, level 1, 1 step, ")
    assert ", 1 level, " in repr(result)
    assert result.diagnostics.summary().startswith("MALA: 1 chain, 1 level, 1 kernel step per chain")


def test_schedules_carry_a_name():
    betas = torch.linspace(1e-4, 0.02, 10, dtype=torch.float64)
    named = compose.Schedule.from_betas(betas, name="mine")
    assert named.name == "mine" and repr(named) == "Schedule(T=10, name='mine')"
    assert named == compose.Schedule(betas) and repr(compose.Schedule(betas)) == "Schedule(T=10)"
    assert compose.Schedule.from_dict(named.to_dict()).name == "mine"
    assert repr(compose.Schedule.cosine(7)) == "Schedule.cosine(T=7)"
    with pytest.raises(ValueError, match="name: expected a non-empty string"):
        compose.Schedule(betas, name="")
    plan = compose.compile(compose.GaussianMixture([[0.0, 0.0]], 1.0, schedule=named)).plan
    assert str(plan).splitlines()[1].startswith("  schedule mine, T = 10 levels")


def test_a_diffusers_schedule_is_named_after_its_beta_schedule():
    diffusers = pytest.importorskip("diffusers")
    from compose.adapters import from_diffusers
    from test_diffusers_adapter import tiny_unet
    unet = tiny_unet()
    scaled = diffusers.DDPMScheduler(num_train_timesteps=20, beta_schedule="scaled_linear",
                                     beta_start=0.00085, beta_end=0.012)
    model = from_diffusers(unet, scaled)
    assert model.schedule.name == "diffusers scaled_linear"
    assert "schedule diffusers scaled_linear, T = 20 levels" in str(compose.compile(model).plan)
    trained = diffusers.DDPMScheduler(num_train_timesteps=20,
                                      trained_betas=torch.linspace(1e-3, 0.1, 20).tolist())
    assert from_diffusers(unet, trained).schedule.name == "diffusers trained_betas"


# -- Pyro's summary over the batch ------------------------------------------------------------
def test_pyro_summary_takes_the_batch_chains_as_chains(capsys):
    schedule = compose.Schedule.cosine(10)
    target = compose.compile(gaussian(schedule, [0.5, -1.0], 0.7, "g"))
    kernel = compose.MALA(0.1).at_level(target, 2, torch.Generator().manual_seed(0))
    x0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(1))
    mcmc = MCMC(kernel, num_samples=30, warmup_steps=5, initial_params={"x": x0},
                disable_progbar=True)
    mcmc.run()
    draws = mcmc.get_samples()["x"]                                     # (30, 16, 2)
    chains = compose.kernels.batch_samples(mcmc)
    assert chains.shape == (16, 30, 2)
    assert torch.equal(chains, draws.transpose(0, 1))                   # chain i = column i
    text = compose.kernels.batch_summary(mcmc)
    lines = text.splitlines()
    assert lines[0] == "16 chains (the batch of chains of each Pyro chain) × 30 draws"
    assert lines[1].split() == ["mean", "std", "median", "5.0%", "95.0%", "n_eff", "r_hat"]
    rows = [line.split() for line in lines[2:4]]
    assert [r[0] for r in rows] == ["x[0]", "x[1]"] and lines[4] == ""  # a row per coordinate
    x = chains.double()
    r_hat, n_eff = split_gelman_rubin(x), effective_sample_size(x)
    for i, row in enumerate(rows):
        assert row[1] == f"{x[..., i].mean().item():.2f}"
        assert row[6] == f"{n_eff[i].item():.2f}" and row[7] == f"{r_hat[i].item():.2f}"
    rate = mcmc.diagnostics()["acceptance rate"]["chain 0"]
    assert lines[5] == (f"acceptance rate {rate:.3f}, divergences 0 (moves of any chain after "
                        "warm-up)")
    # Pyro's own summary: one row per chain × coordinate, which is what this replaces
    capsys.readouterr()
    mcmc.summary()
    assert "x[15,1]" in capsys.readouterr().out
    with pytest.raises(ValueError, match="prob: must be a float in"):
        compose.kernels.batch_summary(mcmc, prob=2)


def test_pyro_summary_elides_coordinates_of_large_events():
    schedule = compose.Schedule.cosine(5)
    target = compose.compile(compose.GaussianMixture([[0.0] * 12], 1.0, schedule=schedule))
    kernel = compose.RandomWalkMH(0.3).at_level(target, 1, torch.Generator().manual_seed(0))
    mcmc = MCMC(kernel, num_samples=6, initial_params={"x": torch.zeros(3, 12)},
                disable_progbar=True)
    mcmc.run()
    lines = compose.kernels.batch_summary(mcmc, max_rows=4).splitlines()
    assert [line.split()[0] for line in lines[2:7]] == ["x[0]", "x[1]", "…", "x[10]", "x[11]"]
    assert "8 coordinates not shown" in lines[4]


# -- smoke tests and set-up -------------------------------------------------------------------
def test_quick_runs_are_labelled_as_smoke_tests():
    assert reporting.smoke_test_lines({"smoke_test": False}) == []
    assert reporting.smoke_test_lines({}) == []
    first = reporting.smoke_test_lines({"smoke_test": True})[0]
    assert first.startswith("**SMOKE TEST (--quick)") and "0.000" in first and "−∞" in first
    # every experiment's report and run use the label
    for name in ("product2d", "digits", "tapestry"):
        folder = ROOT / "compose" / "experiments" / name
        assert "smoke_test_lines(results)" in (folder / "report.py").read_text(), name
        run = (folder / "run.py").read_text()
        assert '"smoke_test": bool(quick)' in run and "say(SMOKE_TEST)" in run, name


def test_dev_sh_says_which_torch_it_installs():
    text = (ROOT / "dev.sh").read_text()
    subprocess.run(["bash", "-n", str(ROOT / "dev.sh")], check=True)
    assert 'pip install -q "torch==2.13.0"' in text                 # what works on this machine
    assert "CUDA build" in text and "TORCH_INDEX_URL" in text
    assert "--index-url \"$TORCH_INDEX_URL\"" in text
    readme = (ROOT / "README.md").read_text()
    assert "(the CPU wheel) when torch is absent" not in readme
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in readme


def test_docs_name_only_functions_that_exist():
    names = set()
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        names |= set(re.findall(r"`(compose(?:\.[A-Za-z_]\w*)+)", path.read_text()))
    missing = []
    for name in sorted(names):
        parts = name.split(".")
        obj = compose
        for i, part in enumerate(parts[1:], 1):
            if not hasattr(obj, part):
                try:
                    obj = __import__(".".join(parts[:i + 1]), fromlist=["_"])
                    continue
                except ImportError:
                    missing.append(name)
                    break
            obj = getattr(obj, part)
    assert missing == []
