"""Mutation testing: plausible one-line breakages of the formulas that matter, each of which some
test must catch.

For each mutation the script copies the repository to a temporary directory, replaces one snippet
of one file (the snippet must occur exactly once), runs the tests that guard that formula, and
records whether they failed (caught) or passed (escaped). It prints a markdown table and the score;
``docs/benchmarks.md`` quotes it.

    python benchmarks/mutations.py              # every mutation
    python benchmarks/mutations.py -k ddim      # those whose name contains "ddim"

A mutation here is what a careful author could plausibly write by mistake: a wrong constant, a
dropped factor, a flipped sign, the wrong neighbour of a table. Adding a formula to the library
means adding its mutation here.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


SDE_TESTS = ("tests/test_sde.py",)
SAMPLER_TESTS = ("tests/test_sampling.py",)

MUTATIONS = [
    # -- the SDEs: kernels, coefficients, chains ------------------------------------------------
    Mutation(
        "VE sigma(t) exponent halved (in marginal_std and g alike)",
        "scoresde/sde/closed_form.py",
        "torch.exp(t * self._log_ratio)",
        "torch.exp(0.5 * t * self._log_ratio)",
        SDE_TESTS,
    ),
    Mutation(
        "VP sigma^2 = 1 - exp(-B / 2)",
        "scoresde/sde/closed_form.py",
        "return torch.sqrt(-torch.expm1(-self.schedule.integrated(t)))",
        "return torch.sqrt(-torch.expm1(-0.5 * self.schedule.integrated(t)))",
        SDE_TESTS,
    ),
    Mutation(
        "VP-family drift -beta instead of -beta / 2",
        "scoresde/sde/closed_form.py",
        "return -0.5 * self.schedule.beta(t)",
        "return -self.schedule.beta(t)",
        SDE_TESTS,
    ),
    Mutation(
        "sub-VP g^2 with exp(-B) instead of exp(-2B)",
        "scoresde/sde/closed_form.py",
        "-torch.expm1(-2 * self.schedule.integrated(t))",
        "-torch.expm1(-self.schedule.integrated(t))",
        SDE_TESTS,
    ),
    Mutation(
        "linear schedule B(t) without the 1/2",
        "scoresde/sde/schedules.py",
        "0.5 * (self.beta_max - self.beta_min) * t**2",
        "(self.beta_max - self.beta_min) * t**2",
        SDE_TESTS,
    ),
    Mutation(
        "cosine schedule offset s = 0.08",
        "scoresde/sde/schedules.py",
        "    S = 0.008",
        "    S = 0.08",
        SDE_TESTS,
    ),
    Mutation(
        "LinearSDE quadrature exp(-F) for exp(-2F)",
        "scoresde/sde/numerical.py",
        "dC = self.g(s.flatten()).reshape(s.shape) ** 2 * torch.exp(-2 * F_s)",
        "dC = self.g(s.flatten()).reshape(s.shape) ** 2 * torch.exp(-F_s)",
        SDE_TESTS,
    ),
    Mutation(
        "DDPM chain kernel abar for sqrt(abar)",
        "scoresde/sde/discrete.py",
        "super().__init__(abar.sqrt(), (1.0 - abar).sqrt(), T)",
        "super().__init__(abar, (1.0 - abar).sqrt(), T)",
        SDE_TESTS + SAMPLER_TESTS,
    ),
    Mutation(
        "chain transition v with a for a^2",
        "scoresde/sampling/chain.py",
        "v = S[:-1] ** 2 - a**2 * S[1:] ** 2",
        "v = S[:-1] ** 2 - a * S[1:] ** 2",
        SDE_TESTS + SAMPLER_TESTS,
    ),
    Mutation(
        "Langevin chain factor a for a^2",
        "scoresde/sampling/chain.py",
        "return (A / below) ** 2",
        "return A / below",
        SAMPLER_TESTS,
    ),
    Mutation(
        "log-SNR inversion searches the wrong half",
        "scoresde/sde/base.py",
        "later = self.log_snr(mid) > lam64",
        "later = self.log_snr(mid) < lam64",
        ("tests/test_grids.py", "tests/test_ddim.py"),
    ),
    # -- samplers -------------------------------------------------------------------------------
    Mutation(
        "Euler-Maruyama noise sqrt(-dt) for -dt",
        "scoresde/sampling/predictors.py",
        "self.sqrt_minus_dt = (-times.diff()).sqrt().to(dtype)",
        "self.sqrt_minus_dt = (-times.diff()).to(dtype)",
        SAMPLER_TESTS,
    ),
    Mutation(
        "reverse diffusion keeps a x for (2 - a) x",
        "scoresde/sampling/predictors.py",
        "self.keep, self.v, self.std = (2 - a).to(dtype)",
        "self.keep, self.v, self.std = a.to(dtype)",
        SAMPLER_TESTS,
    ),
    Mutation(
        "ancestral posterior variance for the transition's",
        "scoresde/sampling/predictors.py",
        'variance = v if self.sde.ancestral_variance == "transition" else v * post',
        "variance = v",
        SAMPLER_TESTS + ("tests/test_ddim.py",),
    ),
    Mutation(
        "Langevin step without the factor 2",
        "scoresde/sampling/correctors.py",
        "self.two_a = (2 * chain_scale(self.sde, times)).to(dtype)",
        "self.two_a = chain_scale(self.sde, times).to(dtype)",
        SAMPLER_TESTS,
    ),
    Mutation(
        "ALD step snr sigma^2 for (snr sigma)^2",
        "scoresde/sampling/correctors.py",
        "step = 2 * chain_scale(self.sde, times) * (self.snr * sigma) ** 2",
        "step = 2 * chain_scale(self.sde, times) * self.snr * sigma**2",
        SAMPLER_TESTS,
    ),
    Mutation(
        "Tweedie denoising with sigma for sigma^2",
        "scoresde/sampling/denoise.py",
        "return (x + sigma**2 * score) / alpha",
        "return (x + sigma * score) / alpha",
        SAMPLER_TESTS,
    ),
    Mutation(
        "DDIM noise exponent flipped",
        "scoresde/sampling/ddim.py",
        "(-torch.expm1(k.log_snr[:-1] - k.log_snr[1:])).sqrt()",
        "(-torch.expm1(k.log_snr[1:] - k.log_snr[:-1])).abs().sqrt()",
        ("tests/test_ddim.py",),
    ),
    Mutation(
        "DDIM data term without the kept alpha",
        "scoresde/sampling/ddim.py",
        "to_x = (k.alpha[1:] - keep * k.alpha[:-1]).to(x.dtype)",
        "to_x = k.alpha[1:].to(x.dtype)",
        ("tests/test_ddim.py",),
    ),
    Mutation(
        "karras grid exponent 1/rho dropped",
        "scoresde/sampling/grids.py",
        "s_max, s_min = torch.exp(-ends / 2) ** (1 / rho)",
        "s_max, s_min = torch.exp(-ends / 2)",
        ("tests/test_grids.py",),
    ),
    Mutation(
        "DPM-Solver++ keeps e^{-c h} for e^{-(c - 1) h}",
        "scoresde/sampling/dpm_solver.py",
        "torch.exp(-(c - 1) * h)",
        "torch.exp(-c * h)",
        ("tests/test_dpm_solver.py",),
    ),
    Mutation(
        "DPM-Solver++ SDE noise sqrt(1 - e^{-h})",
        "scoresde/sampling/dpm_solver.py",
        "(-torch.expm1(-2 * h)).sqrt()",
        "(-torch.expm1(-h)).sqrt()",
        ("tests/test_dpm_solver.py",),
    ),
    Mutation(
        "iPNDM's third-order weight 5/12 -> 4/12",
        "scoresde/sampling/ipndm.py",
        "(23 / 12, -16 / 12, 5 / 12)",
        "(23 / 12, -16 / 12, 4 / 12)",
        ("tests/test_multistep.py",),
    ),
    Mutation(
        "Heun's correction weighs d and d' 1 : 0",
        "scoresde/sampling/heun.py",
        "y = y + (0.5 * h[i]) * (d + d_next)",
        "y = y + h[i] * d",
        ("tests/test_heun.py",),
    ),
    Mutation(
        "adaptive SDE accepts errors up to 2",
        "scoresde/sampling/adaptive_sde.py",
        "accepted = active & (error <= 1)",
        "accepted = active & (error <= 2)",
        ("tests/test_adaptive_sde.py",),
    ),
    Mutation(
        "classifier guidance subtracts the classifier's gradient",
        "scoresde/guidance.py",
        "return score_fn(x, t) + scale * _log_posterior_gradient(",
        "return score_fn(x, t) - scale * _log_posterior_gradient(",
        ("tests/test_guidance.py",),
    ),
    Mutation(
        "classifier-free guidance w (c - u) for (1 + w) c - w u, as w c - w u",
        "scoresde/guidance.py",
        "return cond + w * (cond - cond_score_fn(x, t, None))",
        "return w * (cond - cond_score_fn(x, t, None))",
        ("tests/test_guidance.py",),
    ),
    Mutation(
        "inpainting replacement draws around y, not alpha y",
        "scoresde/inpainting.py",
        "return torch.where(known, alpha * y + sigma * noise.like(x), x)",
        "return torch.where(known, y + sigma * noise.like(x), x)",
        ("tests/test_inpainting.py",),
    ),
    Mutation(
        "SMC inpainting keeps the previous potential in the weights",
        "scoresde/inpainting.py",
        "log_w = log_w - _log_normal(x, k.alpha[i].to(dtype) * y, k.sigma[i] ** 2, known)",
        "log_w = log_w - 0 * _log_normal(x, k.alpha[i].to(dtype) * y, k.sigma[i] ** 2, known)",
        ("tests/test_inpainting.py",),
    ),
    Mutation(
        "twisted SMC keeps the last twist in the final weights",
        "scoresde/inpainting.py",
        "log_w = log_w - log_h_prev  # the final target has no twist",
        "log_w = log_w - 0 * log_h_prev  # the final target has no twist",
        ("tests/test_inpainting.py",),
    ),
    Mutation(
        "twisted SMC adds each twist without dividing by the ancestor's",
        "scoresde/inpainting.py",
        "log_w = log_w + (log_h - log_h_prev)",
        "log_w = log_w + log_h",
        ("tests/test_inpainting.py",),
    ),
    Mutation(
        "label dropout keeps a label with probability p_uncond",
        "scoresde/guidance.py",
        "return torch.where(u < p_uncond, NULL_LABEL, y)",
        "return torch.where(u > p_uncond, NULL_LABEL, y)",
        ("tests/test_conditional_training.py",),
    ),
    Mutation(
        "noisy classifier trained on x_t without the noise's std",
        "scoresde/losses.py",
        "logits = model(mean + batch_broadcast(std, x0) * z, t)",
        "logits = model(mean + z, t)",
        ("tests/test_conditional_training.py",),
    ),
    # -- the oracle, parameterisations, losses, likelihood -----------------------------------------
    Mutation(
        "mixture score divides by the std, not the variance",
        "scoresde/datasets/gmm.py",
        "g = -diff / var  # in each",
        "g = -diff / var.sqrt()  # in each",
        ("tests/test_gmm.py",),
    ),
    Mutation(
        "epsilon parameterisation multiplies by sigma",
        "scoresde/score.py",
        "return -out / sigma",
        "return -out * sigma",
        ("tests/test_score.py",),
    ),
    Mutation(
        "x0 parameterisation without alpha",
        "scoresde/score.py",
        "return (alpha * out - x) / sigma**2",
        "return (out - x) / sigma**2",
        ("tests/test_score.py",),
    ),
    Mutation(
        "likelihood weighting g for g^2",
        "scoresde/losses.py",
        "weight = weight * sde.sde(x0, t)[1] ** 2 / std**2",
        "weight = weight * sde.sde(x0, t)[1] / std**2",
        ("tests/test_losses.py",),
    ),
    Mutation(
        "score_sde weighting sigma for sigma^2 (loss weighted 1 / sigma)",
        "scoresde/losses.py",
        "    residual = (std * score_fn(mean + std * z, t) + z) ** 2",
        "    residual = (std * score_fn(mean + std * z, t) + z) ** 2 / std",
        ("tests/test_losses.py",),
    ),
    Mutation(
        "importance sampling without the density ratio",
        "scoresde/losses.py",
        "            weight = 1 / ratio\n",
        "            weight = 1.0\n",
        ("tests/test_losses.py",),
    ),
    Mutation(
        "likelihood subtracts the divergence integral",
        "scoresde/likelihood.py",
        "    logp = prior_logp + delta_logp",
        "    logp = prior_logp - delta_logp",
        ("tests/test_likelihood.py",),
    ),
    Mutation(
        "Hutchinson estimate not averaged over probes",
        "scoresde/likelihood.py",
        "    return estimate / probes.shape[0]",
        "    return estimate",
        ("tests/test_likelihood.py",),
    ),
    Mutation(
        "exact trace's batched vectors laid out sample-major, not row-major",
        "scoresde/likelihood.py",
        "        vectors = units[:, None, :].expand(k, b, d).reshape(k, *x.shape)",
        "        vectors = units[None, :, :].expand(b, k, d).reshape(k, *x.shape)",
        ("tests/test_likelihood.py",),
    ),
    Mutation(
        "exact trace without the fallback where the batched product fails",
        "scoresde/likelihood.py",
        "contextlib.suppress(RuntimeError):  # no batching rule",
        "contextlib.suppress(ValueError):  # no batching rule",
        ("tests/test_likelihood.py",),
    ),
    Mutation(
        "exact trace counts the padding rows of the last pass",
        "scoresde/likelihood.py",
        "        units = units * (rows < d).to(v.dtype)[:, None]  # (k, D)",
        "        units = units  # (k, D)",
        ("tests/test_likelihood.py",),
    ),
    Mutation(
        "exact trace's unit vectors one row off",
        "scoresde/likelihood.py",
        "        rows = torch.arange(p * k, (p + 1) * k, device=v.device)  # the row of vector j",
        "        rows = torch.arange(p * k + 1, (p + 1) * k + 1, device=v.device)",
        ("tests/test_likelihood.py",),
    ),
    Mutation(
        "bits/dim without the range stretch",
        "scoresde/likelihood.py",
        "return -(logp + d * math.log(scale) - d * math.log(num_bins))",
        "return -(logp - d * math.log(num_bins))",
        ("tests/test_likelihood.py",),
    ),
    Mutation(
        "the config's guidance scale passed as cfg's w (gamma for gamma - 1)",
        "scoresde/conditioning.py",
        "return classifier_free(cond_score_fn, self.label, self.scale - 1.0)",
        "return classifier_free(cond_score_fn, self.label, self.scale)",
        ("tests/test_conditioning.py",),
    ),
    Mutation(
        "distributed gather in reverse rank order",
        "scoresde/distributed.py",
        "return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])",
        "return torch.cat([p[:s] for p, s in zip(parts[::-1], sizes[::-1], strict=True)])",
        ("tests/test_distributed.py",),
    ),
    Mutation(
        "image levels scaled by L instead of L - 1",
        "scoresde/datasets/images.py",
        "return lo + (hi - lo) * levels.to(torch.float32) / (self.num_levels - 1)",
        "return lo + (hi - lo) * levels.to(torch.float32) / self.num_levels",
        ("tests/test_image_data.py", "tests/test_images_run.py"),
    ),
    Mutation(
        "image samples back to levels without the range stretch",
        "scoresde/datasets/images.py",
        "return (x - lo) * ((self.num_levels - 1) / (hi - lo))",
        "return (x - lo) * (self.num_levels - 1)",
        ("tests/test_image_data.py", "tests/test_images_run.py"),
    ),
    Mutation(
        "k-th neighbour radius: a chunk's own point masked at its row, not at start + row",
        "scoresde/image_metrics.py",
        'distances[rows, start + rows] = float("inf")',
        'distances[rows, rows] = float("inf")',
        ("tests/test_image_metrics.py",),
    ),
    Mutation(
        "an inpainting run's error in grey levels over the known entries, not the hidden",
        "scoresde/conditioning.py",
        "            target.to_data(samples), target.to_data(truth), unknown",
        "            target.to_data(samples), target.to_data(truth), ~unknown",
        (
            "tests/test_images_run.py::test_inpainted_digits_are_classified_against_their_true_class",
        ),
    ),
    Mutation(
        "label accuracy compares the predictions with the labels shifted by one",
        "scoresde/image_metrics.py",
        "return float((predicted == labels.cpu()).double().mean())",
        "return float((predicted == labels.cpu().roll(1)).double().mean())",
        ("tests/test_image_metrics.py", "tests/test_images_run.py"),
    ),
    # -- training ---------------------------------------------------------------------------------
    Mutation(
        "the held-out likelihood curve measures the raw network, not the EMA",
        "scoresde/pipeline.py",
        "out.update(_held_out_likelihood(parts, ema_model, test, curve_seed))",
        "out.update(_held_out_likelihood(parts, parts.model, test, curve_seed))",
        (
            "tests/test_images_run.py::test_the_bits_per_dim_curve_is_the_ema_models_on_the_first_test_images",
        ),
    ),
    Mutation(
        "the likelihood curve's shards are not gathered (each rank keeps the mean of its own)",
        "scoresde/pipeline.py",
        'return {"test_nll": -float(distributed.gather(logp).mean())}',
        'return {"test_nll": -float(logp.mean())}',
        (
            "tests/test_distributed.py::test_the_likelihood_curve_is_sharded_and_matches_one_process",
        ),
    ),
    Mutation(
        "EMA folds in with weight d instead of 1 - d",
        "scoresde/training.py",
        "weight = 1.0 - self.current_decay()",
        "weight = self.current_decay()",
        ("tests/test_training.py",),
    ),
    Mutation(
        "cosine learning rate rises instead of falling",
        "scoresde/training.py",
        "    return rate * 0.5 * (1.0 + math.cos(math.pi * progress))",
        "    return rate * 0.5 * (1.0 - math.cos(math.pi * progress))",
        ("tests/test_training.py",),
    ),
    Mutation(
        "cosine schedule's progress counts the warm-up",
        "scoresde/training.py",
        "    progress = min(1.0, max(0, step - 1 - warmup) / (n_iters - warmup))",
        "    progress = min(1.0, (step - 1) / n_iters)",
        ("tests/test_training.py",),
    ),
]


def run(mutation: Mutation, workdir: Path, timeout: float) -> tuple[str, float]:
    target = workdir / mutation.path
    original = target.read_text()
    if original.count(mutation.old) != 1:
        return f"snippet found {original.count(mutation.old)} times", 0.0
    target.write_text(original.replace(mutation.old, mutation.new))
    began = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutation.tests],
            cwd=workdir,
            capture_output=True,
            timeout=timeout,
        )
        verdict = "caught" if done.returncode != 0 else "ESCAPED"
    except subprocess.TimeoutExpired:
        verdict = "caught (timeout)"
    finally:
        target.write_text(original)
    return verdict, time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only mutations whose name contains this")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutation")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if args.k.lower() in m.name.lower()]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "repo"
        shutil.copytree(ROOT, workdir, ignore=shutil.ignore_patterns(".git", "runs", "__pycache__"))
        print("| mutation | file | tests | verdict | s |")
        print("| --- | --- | --- | --- | ---: |")
        caught = 0
        for m in chosen:
            verdict, seconds = run(m, workdir, args.timeout)
            caught += verdict.startswith("caught")
            tests = ", ".join(Path(t).name for t in m.tests)
            print(f"| {m.name} | `{m.path}` | {tests} | {verdict} | {seconds:.0f} |", flush=True)
    print(f"\n{caught} of {len(chosen)} mutations caught")
    return 0 if caught == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
