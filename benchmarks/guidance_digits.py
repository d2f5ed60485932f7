"""Guidance and inpainting on the 8x8 digits (issue 12, sections 3 and 5).

Three networks are trained in ``--workdir`` (or resumed from there: the checkpoints of ``python
-m scoresde.run --config FILE --workdir W --mode train`` are the same):

* ``unconditional/``: the digits model of ``configs/digits/vp.py``, the reference, trained like
  the conditional network (:data:`TRAINING`: 4,500 updates at a constant rate of 1e-3 with
  dropout 0.1, where the numbers in docs/benchmarks.md were measured; the digits default is now
  2,000 cosine-scheduled updates without dropout);
* ``conditional/``: the class-conditional U-Net of ``configs/digits/vp_cond.py`` (the same job with
  a label embedding and label dropout 0.2), which gives ``s(x, t, y)`` and, with its null label,
  ``s(x, t)``;
* ``conditional/classifier/``: the noise-conditional classifier (the U-Net layout with a 10-way
  head, ``classifier.n_iters`` updates), as ``--config.sampling.guidance=classifier`` trains it.

Then, with the config's sampler (Euler-Maruyama, 100 steps) and ``--n`` samples whose requested
digits run 0, 1, ..., 9, 0, ...:

1. **The guidance sweep**. Classifier-free guidance ``gamma s(x, t, y) - (gamma - 1) s(x, t)`` of
   the conditional network at each scale ``gamma`` (``gamma = 0``: its null label; 1: the
   conditional law), and classifier guidance of the unconditional model,
   ``s(x, t) + gamma grad log p_t(y | x)``, with the noisy classifier. Per row: the fraction of
   samples that the shipped evaluation classifier assigns to the requested digit, the Fréchet
   distance of all samples to the test images (the floor: as many training images), and its ratio
   to the unconditional model's FD. Targets: at the best scale >= 95 % of the requested digit with
   FD <= 1.5 x the unconditional model's.
2. **Inpainting the lower half** of the first ``--n-inpaint`` test digits with the unconditional
   model: replacement (the config's sampler) and SMC with each ``--particles`` count ``K``. Per
   row: the fraction completed to the true digit (one completion per digit; for SMC one particle
   drawn by its weight), for SMC also the weighted share of all ``K`` particles (the same
   expectation with less noise), the RMS error on the hidden pixels in grey levels, score
   evaluations per image and the sampler's wall time. Beside them, the rough reference of
   ``benchmarks/digits_reference.py``: an exact sampler of the data's conditional completes a
   digit to its true class with probability ``E[p(y_true | upper half)]``, here a kernel estimate
   over the training split's upper halves (probably low; its docstring says why). Target: SMC
   with the most particles completes >= 90 % to the true digit.

Figures (``--figures DIR``): ``guidance.png`` (accuracy against FD per scale, both guidances),
``digits_classes.png`` (samples of each digit at the best classifier-free scale) and
``digits_inpainting.png`` (test digits, their upper halves, replacement's and SMC's completions).

    python benchmarks/guidance_digits.py --workdir runs/guidance --figures docs  # ~90 min, 1 core
                                                # (from scratch: three networks, 20 sweep rows)
    python benchmarks/guidance_digits.py --workdir W --scales 0 1 3 --classifier-scales 4 --n 500
    python benchmarks/guidance_digits.py --workdir W --part inpainting --particles 16 64 256
    python benchmarks/guidance_digits.py --workdir /tmp/q --quick --n 50 --particles 2  # smoke
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import NamedTuple

import torch
from digits_reference import exact_completion_share
from torch import Tensor, nn

from scoresde import inpaint, inpaint_particles, pipeline
from scoresde.conditioning import named_mask
from scoresde.config import REPOSITORY_CONFIGS, load_config_file, validate_config
from scoresde.datasets import load_dataset
from scoresde.guidance import classifier_free, classifier_guidance, unconditional
from scoresde.image_eval import EVAL_CLASSIFIERS, label_accuracy
from scoresde.image_metrics import classify, sample_quality
from scoresde.sampling import sample
from scoresde.sde import ScoreFn

TARGETS = {"accuracy": 0.95, "fd_over_unconditional": 1.5, "inpaint_accuracy": 0.90}


TRAINED_LIKE_COND = ("model.dropout", "training.n_iters", "training.lr", "training.lr_schedule")
"""The fields ``vp.py`` takes from ``configs/digits/vp_cond.py``, so that both score networks are
trained alike (:data:`TRAINING`)."""


def _cond_training() -> dict[str, object]:
    cond = load_config_file(REPOSITORY_CONFIGS / "digits" / "vp_cond.py")
    return {field: cond[field.split(".")[0]][field.split(".")[1]] for field in TRAINED_LIKE_COND}


TRAINING = _cond_training()
"""How both score networks are trained: ``configs/digits/vp_cond.py``'s settings of
:data:`TRAINED_LIKE_COND` (4,500 updates at a constant rate of 1e-3, dropout 0.1)."""

QUICK = {"training.n_iters": 20, "classifier.n_iters": 20, "sampling.num_steps": 5}
"""``--quick``: a smoke run of every stage (the numbers mean nothing)."""


def build_parts(config_file: str, quick: bool, **sampling: object) -> pipeline.Parts:
    """The parts of ``configs/digits/<config_file>`` (``sampling`` fields set, :data:`TRAINING`)."""
    config = load_config_file(REPOSITORY_CONFIGS / "digits" / config_file)
    config.sampling.update(sampling)
    for field, value in {**TRAINING, **(QUICK if quick else {})}.items():
        group, name = field.split(".")
        config[group][name] = value
    validate_config(config)
    return pipeline.build(config)


class Networks(NamedTuple):
    """The trained EMA networks of the benchmark and their parts (the conditional network and
    the classifier only where the guidance sweep runs)."""

    plain: pipeline.Parts  # configs/digits/vp.py
    plain_net: nn.Module
    cond: pipeline.Parts | None  # configs/digits/vp_cond.py, classifier guidance: the classifier
    cond_net: nn.Module | None
    classifier: nn.Module | None


def trained_networks(workdir: Path, quick: bool, guidance: bool = True) -> Networks:
    """The networks (module docstring), trained in ``workdir`` or resumed from there: the
    unconditional one, and with ``guidance`` the conditional one and the classifier."""
    began = time.perf_counter()
    plain = build_parts("vp.py", quick)
    trained = {"unconditional": pipeline.train(plain, workdir / "unconditional")}
    cond = None
    if guidance:
        # the score network's training does not depend on the guidance; these parts hold the
        # classifier
        cond = build_parts("vp_cond.py", quick, guidance="classifier", guidance_scale=1.0)
        trained["conditional"] = pipeline.train(cond, workdir / "conditional")
        classifier_dir = workdir / "conditional" / "classifier"
        trained["classifier"] = pipeline.train_classifier(cond, classifier_dir)
    done = [
        f"{name} {t.section['steps']} updates ({t.section['steps_this_run']} in this run)"
        for name, t in trained.items()
    ]
    print(f"trained: {', '.join(done)}; {time.perf_counter() - began:.0f} s\n", flush=True)
    ema = {name: t.ema_model for name, t in trained.items()}
    return Networks(
        plain, ema["unconditional"], cond, ema.get("conditional"), ema.get("classifier")
    )


class Counted:
    """A score function that counts the rows it evaluates: score evaluations per image, where
    :class:`~scoresde.score_calls.CountedScore` counts calls (an SMC call is on all particles)."""

    def __init__(self, score_fn: ScoreFn):
        self.score_fn, self.rows = score_fn, 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.rows += x.shape[0]
        return self.score_fn(x, t)


def guided(nets: Networks, kind: str, scale: float, labels: Tensor) -> ScoreFn:
    """The score of one row of the sweep: ``kind`` ``"cfg"`` (the conditional network; scale 0:
    its null label) or ``"classifier"`` (the unconditional model and the noisy classifier)."""
    cond = nets.cond.cond_score_fn(nets.cond_net)
    if kind == "cfg":
        return unconditional(cond) if scale == 0 else classifier_free(cond, labels, scale - 1.0)
    return classifier_guidance(nets.plain.score_fn(nets.plain_net), nets.classifier, labels, scale)


def sweep_row(parts: pipeline.Parts, score_fn: ScoreFn, labels: Tensor, seed: int) -> dict:
    """Samples of ``score_fn`` for the requested ``labels`` and their measures."""
    counted = Counted(score_fn)
    began = time.perf_counter()
    samples = sample(
        parts.sde,
        counted,
        (len(labels), *parts.dataset.shape),
        generator=torch.Generator().manual_seed(seed),
        **parts.sampling,
    ).float()
    wall = time.perf_counter() - began
    train, test = parts.dataset.split("train").x, parts.dataset.split("test").x
    quality = sample_quality(
        EVAL_CLASSIFIERS.lookup("digits")(),
        samples,
        train,
        test,
        labels=labels,
        generator=torch.Generator().manual_seed(seed + 1),
    )
    return {**quality, "samples": samples, "calls": counted.rows / len(labels), "wall": wall}


def smc_name(k: int, twist: bool) -> str:
    """The table's name of SMC with ``k`` particles (twisted or not)."""
    return f"SMC{', twisted' if twist else ''}, K = {k}"


def inpainting(
    parts: pipeline.Parts,
    score_fn: ScoreFn,
    n: int,
    particles: list[int],
    twist: bool,
    seed: int,
) -> tuple[dict[str, dict], dict[str, Tensor]]:
    """The first ``n`` test digits' lower halves inpainted by replacement and by SMC with each
    particle count (module docstring): a row per method and the completions."""
    test = parts.dataset.split("test")
    x0, y0 = test.x[:n], test.y[:n]  # n <= the test images (checked by main)
    mask = named_mask("lower_half", tuple(parts.dataset.shape))
    hidden = ~mask.expand(x0.shape)
    grid = {
        k: v
        for k, v in parts.sampling.items()
        if k in ("num_steps", "grid", "eps", "rho", "denoise")
    }
    classifier = EVAL_CLASSIFIERS.lookup("digits")()
    rows, completed = {}, {"test images": x0, "known": torch.where(mask, x0, 0.0)}

    def row(name: str, x: Tensor, counted: Counted, wall: float, **extra: float) -> None:
        error = parts.dataset.to_data(x) - parts.dataset.to_data(x0)
        rows[name] = {
            "accuracy": label_accuracy(parts.dataset, x, y0),
            "rmse_levels": float(error[hidden].pow(2).mean().sqrt()),
            "calls": counted.rows / n,
            "wall": wall,
            **extra,
        }
        completed[name] = x

    counted, began = Counted(score_fn), time.perf_counter()
    x = inpaint(
        parts.sde, counted, x0, mask, generator=torch.Generator().manual_seed(seed),
        method="replacement", **parts.sampling,
    )  # fmt: skip
    row("replacement", x.float(), counted, time.perf_counter() - began)
    for k in particles:
        counted, began = Counted(score_fn), time.perf_counter()
        cloud = inpaint_particles(
            parts.sde, counted, x0, mask, particles=k, twist=twist,
            generator=torch.Generator().manual_seed(seed), **grid,
        )  # fmt: skip
        wall = time.perf_counter() - began
        weights = cloud.log_weights.exp()
        with torch.no_grad():
            _, predicted = classify(classifier, cloud.x.flatten(0, 1).float())
        right = (predicted.reshape(n, k) == y0[:, None]).double()
        draw = torch.multinomial(
            weights.float(), 1, generator=torch.Generator().manual_seed(seed + 1)
        )
        x = cloud.x[torch.arange(n), draw[:, 0]].float()
        weighted = float((weights * right).sum(1).mean())
        row(smc_name(k, twist), x, counted, wall, weighted=weighted)
    rows["the test images themselves"] = {
        "accuracy": label_accuracy(parts.dataset, x0, y0),
        "rmse_levels": 0.0,
        "calls": 0.0,
        "wall": 0.0,
    }
    return rows, completed


def inpainting_table(nets: Networks, args: argparse.Namespace) -> dict[str, Tensor]:
    """Print the inpainting table and the target's verdict; the completions for the figure."""
    parts = nets.plain
    n = args.n_inpaint
    rows, completed = inpainting(
        parts, parts.score_fn(nets.plain_net), n, args.particles, args.twist, args.seed
    )
    exact, exact_err = exact_completion_share(parts.dataset, n)
    print(
        f"| lower half of {n} test digits | true digit (one completion each) | weighted share of "
        "all particles | RMS error (grey levels) | score evaluations per image | wall (s) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, r in rows.items():
        weighted = f"{r['weighted']:.3f}" if "weighted" in r else "-"
        print(
            f"| {name} | {r['accuracy']:.3f} | {weighted} | {r['rmse_levels']:.2f} | "
            f"{r['calls']:.0f} | {r['wall']:.0f} |"
        )
    print(
        f"| kernel estimate of E[p(y_true | upper half)], an exact sampler's share (rough, "
        f"probably low) | {exact:.3f} +- {exact_err:.3f} | | | | |"
    )
    name = smc_name(max(args.particles), args.twist)
    best, target = rows[name], TARGETS["inpaint_accuracy"]
    print(
        f"\n{name}: {best['accuracy']:.3f} completed to the true digit (weighted share of "
        f"all particles {best['weighted']:.3f}; target >= {target}: "
        f"{'met' if best['accuracy'] >= target else 'missed'})"
    )
    return completed


def best_scale(rows: dict[float, dict], reference_fd: float) -> float:
    """The guided scale (> 0) with the highest accuracy among those whose FD is within the
    target's factor of the unconditional model's (the lowest FD if none is)."""
    rows = {s: r for s, r in rows.items() if s > 0}
    bound = TARGETS["fd_over_unconditional"] * reference_fd
    within = [s for s, r in rows.items() if r["fd"] <= bound]
    if not within:
        return min(rows, key=lambda s: rows[s]["fd"])
    return max(within, key=lambda s: (rows[s]["label_accuracy"], -rows[s]["fd"]))


def draw_tradeoff(
    sweeps: dict[str, dict[float, dict]], unconditional_fd: float, path: Path
) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.2), layout="constrained")
    ax = fig.subplots()
    names = {"cfg": "classifier-free", "classifier": "classifier guidance"}
    for kind, rows in sweeps.items():
        scales = sorted(rows)
        fd = [rows[s]["fd"] / unconditional_fd for s in scales]
        acc = [rows[s]["label_accuracy"] for s in scales]
        ax.plot(fd, acc, "o-", label=names[kind])
        for s, x, y in zip(scales, fd, acc, strict=True):
            ax.annotate(f"{s:g}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.axhline(TARGETS["accuracy"], color="grey", ls=":", lw=1)
    ax.axvline(TARGETS["fd_over_unconditional"], color="grey", ls=":", lw=1)
    ax.set_xlabel("FD / FD of the unconditional samples")
    ax.set_ylabel("fraction classified as the requested digit")
    ax.set_title("digits, VP: guidance scale gamma (labels) against sample quality", fontsize=9)
    ax.legend(frameon=False, loc="lower right")
    fig.savefig(path, dpi=110)


def draw_classes(
    parts: pipeline.Parts, rows: dict[float, dict], labels: Tensor, path: Path
) -> None:
    """One panel per classifier-free scale: 10 samples of each requested digit, a digit a row."""
    from scoresde.plotting import shown_grid

    def by_digit(samples: Tensor) -> Tensor:
        return torch.cat([samples[labels == y][:10] for y in range(10)])

    scales = sorted(rows)
    figure = shown_grid(
        [[by_digit(rows[s]["samples"]) for s in scales]],
        parts.dataset.show,
        col_labels=[f"gamma = {s:g}: {rows[s]['label_accuracy']:.1%} right" for s in scales],
        title="digits, VP: classifier-free guidance, rows: the requested digit 0-9",
    )
    figure.savefig(path, dpi=110)


def draw_inpainting(parts: pipeline.Parts, completed: dict[str, Tensor], path: Path) -> None:
    from scoresde.plotting import shown_grid

    names = list(completed)
    figure = shown_grid(
        [[completed[name][:25] for name in names]],
        parts.dataset.show,
        col_labels=names,
        title=f"digits: the lower half of {len(completed[names[0]][:25])} test images inpainted "
        "(VP, unconditional score)",
    )
    figure.savefig(path, dpi=110)


def guidance_tables(nets: Networks, args: argparse.Namespace) -> None:
    """Print the guidance sweep and its targets' verdicts; draw its figures."""
    parts = nets.plain
    labels = torch.arange(args.n) % 10
    reference = sweep_row(parts, parts.score_fn(nets.plain_net), labels, args.seed)
    ref_fd = reference["fd"]
    print(
        f"digits, VP, {parts.config.sampling.sampler} sampler, {args.n} samples per row, the "
        f"requested digits 0-9 in turn; FD floor ({min(args.n, 1497)} training images against "
        f"the test images) {reference['fd_floor']:.1f}\n"
    )
    print(
        "| guidance | gamma | requested digit | FD | FD / unconditional model's "
        "| precision / recall | score evaluations per sample | wall (s) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")

    def row(name: str, scale: str, r: dict) -> None:
        print(
            f"| {name} | {scale} | {r['label_accuracy']:.3f} | {r['fd']:.1f} | "
            f"{r['fd'] / ref_fd:.2f} | {r['precision']:.2f} / {r['recall']:.2f} | "
            f"{r['calls']:.0f} | {r['wall']:.0f} |",
            flush=True,
        )

    row("none: the unconditional model", "-", reference)
    sweeps: dict[str, dict[float, dict]] = {"cfg": {}, "classifier": {}}
    names = {"cfg": "classifier-free", "classifier": "classifier (unconditional model)"}
    for kind, scales in (("cfg", args.scales), ("classifier", args.classifier_scales)):
        for scale in scales:
            r = sweep_row(parts, guided(nets, kind, scale, labels), labels, args.seed)
            sweeps[kind][scale] = r
            name = "none: the conditional network's null label" if scale == 0 else names[kind]
            row(name, f"{scale:g}", r)
    for kind, rows in sweeps.items():
        best = best_scale(rows, ref_fd)
        r = rows[best]
        met = (
            r["label_accuracy"] >= TARGETS["accuracy"]
            and r["fd"] <= TARGETS["fd_over_unconditional"] * ref_fd
        )
        print(
            f"\nbest {names[kind]} scale {best:g}: {r['label_accuracy']:.3f} of the requested "
            f"digit (target >= {TARGETS['accuracy']}), FD {r['fd'] / ref_fd:.2f} x the "
            f"unconditional model's (target <= {TARGETS['fd_over_unconditional']}): "
            f"{'met' if met else 'missed'}"
        )
    best = best_scale(sweeps["cfg"], ref_fd)
    print()
    if args.figures is not None:
        draw_tradeoff(sweeps, ref_fd, args.figures / "guidance.png")
        shown = {g: sweeps["cfg"][g] for g in (best, max(sweeps["cfg"])) if g > 0}
        draw_classes(parts, shown, labels, args.figures / "digits_classes.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--n", type=int, default=1497, help="samples per guidance scale")
    parser.add_argument("--scales", type=float, nargs="+", default=[0, 1, 1.5, 2, 3, 4])
    parser.add_argument("--classifier-scales", type=float, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--part", choices=("all", "guidance", "inpainting"), default="all")
    parser.add_argument("--particles", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--n-inpaint", type=int, default=100, help="test digits to inpaint")
    parser.add_argument("--twist", action="store_true", help="SMC with twisting functions")
    parser.add_argument("--figures", type=Path, default=None, help="where the figures go")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a smoke run (QUICK)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    n_test = len(load_dataset("digits").split("test").y)
    if not 1 <= args.n_inpaint <= n_test:
        parser.error(
            f"--n-inpaint must be in [1, {n_test}] (the test digits); got {args.n_inpaint}"
        )
    nets = trained_networks(args.workdir, args.quick, guidance=args.part != "inpainting")
    if args.figures is not None:
        args.figures.mkdir(parents=True, exist_ok=True)
    if args.part in ("all", "guidance"):
        guidance_tables(nets, args)
    if args.part in ("all", "inpainting"):
        completed = inpainting_table(nets, args)
        if args.figures is not None:
            draw_inpainting(nets.plain, completed, args.figures / "digits_inpainting.png")


if __name__ == "__main__":
    main()
