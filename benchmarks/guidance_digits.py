"""Guidance and inpainting on the 8x8 digits (issue 12, sections 3 and 5).

Three networks are trained in ``--workdir`` (or resumed from there: the checkpoints of ``python
-m scoresde.run --config FILE --workdir W --mode train`` are the same):

* ``unconditional/``: the default digits model (``configs/digits/vp.py``), the reference;
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
2. **Inpainting the lower half** of the 300 test digits with the unconditional model: replacement
   (the config's sampler) and SMC with ``--particles`` particles per image. Per method: the
   fraction completed to the true digit (target for SMC: >= 90 %), the RMS error on the hidden
   pixels in grey levels, score evaluations per image and wall time.

Figures (``--figures DIR``): ``guidance.png`` (accuracy against FD per scale, both guidances),
``digits_classes.png`` (samples of each digit at the best classifier-free scale) and
``digits_inpainting.png`` (test digits, their upper halves, replacement's and SMC's completions).

    python benchmarks/guidance_digits.py --workdir runs/guidance --figures docs  # ~50 min, 1 core
    python benchmarks/guidance_digits.py --workdir W --scales 0 1 3 --classifier-scales 4 --n 500
    python benchmarks/guidance_digits.py --workdir /tmp/q --quick --n 50 --particles 2  # smoke
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from scoresde import inpaint, pipeline
from scoresde.conditioning import named_mask
from scoresde.config import REPOSITORY_CONFIGS, load_config_file, validate_config
from scoresde.guidance import classifier_free, classifier_guidance, unconditional
from scoresde.image_eval import EVAL_CLASSIFIERS, label_accuracy
from scoresde.image_metrics import sample_quality
from scoresde.sampling import sample
from scoresde.sde import ScoreFn

TARGETS = {"accuracy": 0.95, "fd_over_unconditional": 1.5, "inpaint_accuracy": 0.90}


QUICK = {"training.n_iters": 20, "classifier.n_iters": 20, "sampling.num_steps": 5}
"""``--quick``: a smoke run of every stage (the numbers mean nothing)."""


def build_parts(config_file: str, quick: bool, **sampling: object) -> pipeline.Parts:
    """The parts of ``configs/digits/<config_file>`` (with ``sampling`` fields set)."""
    config = load_config_file(REPOSITORY_CONFIGS / "digits" / config_file)
    config.sampling.update(sampling)
    for field, value in QUICK.items() if quick else ():
        group, name = field.split(".")
        config[group][name] = value
    validate_config(config)
    return pipeline.build(config)


class Networks(NamedTuple):
    """The trained EMA networks of the benchmark and their parts."""

    plain: pipeline.Parts  # configs/digits/vp.py
    plain_net: nn.Module
    cond: pipeline.Parts  # configs/digits/vp_cond.py, classifier guidance: holds the classifier
    cond_net: nn.Module
    classifier: nn.Module


def trained_networks(workdir: Path, quick: bool) -> Networks:
    """The three networks (module docstring), trained in ``workdir`` or resumed from there."""
    began = time.perf_counter()
    plain = build_parts("vp.py", quick)
    plain_net = pipeline.train(plain, workdir / "unconditional")
    # the score network's training does not depend on the guidance; these parts hold the classifier
    cond = build_parts("vp_cond.py", quick, guidance="classifier", guidance_scale=1.0)
    cond_net = pipeline.train(cond, workdir / "conditional")
    classifier = pipeline.train_classifier(cond, workdir / "conditional" / "classifier")
    done = [
        f"{name} {t.section['steps']} updates ({t.section['steps_this_run']} in this run)"
        for name, t in (("unconditional", plain_net), ("conditional", cond_net),
                        ("classifier", classifier))
    ]  # fmt: skip
    print(f"trained: {', '.join(done)}; {time.perf_counter() - began:.0f} s\n", flush=True)
    return Networks(plain, plain_net.ema_model, cond, cond_net.ema_model, classifier.ema_model)


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


def inpainting(
    parts: pipeline.Parts, score_fn: ScoreFn, particles: int, seed: int
) -> tuple[dict[str, dict], dict[str, Tensor]]:
    """Every test digit's lower half inpainted by replacement and by SMC (module docstring)."""
    test = parts.dataset.split("test")
    mask = named_mask("lower_half", tuple(parts.dataset.shape))
    hidden = ~mask.expand(test.x.shape)
    grid = ("num_steps", "grid", "eps", "rho", "denoise")
    methods = {
        "replacement": {"method": "replacement", **parts.sampling},
        f"SMC, K = {particles}": {
            "method": "smc",
            "particles": particles,
            **{k: v for k, v in parts.sampling.items() if k in grid},
        },
    }
    rows, completed = {}, {"test images": test.x, "known": torch.where(mask, test.x, 0.0)}
    for name, options in methods.items():
        counted = Counted(score_fn)
        began = time.perf_counter()
        generator = torch.Generator().manual_seed(seed)
        x = inpaint(parts.sde, counted, test.x, mask, generator=generator, **options).float()
        wall = time.perf_counter() - began
        error = parts.dataset.to_data(x) - parts.dataset.to_data(test.x)
        rows[name] = {
            "accuracy": label_accuracy(parts.dataset, x, test.y),
            "rmse_levels": float(error[hidden].pow(2).mean().sqrt()),
            "calls": counted.rows / len(test.x),
            "wall": wall,
        }
        completed[name] = x
    rows["the test images themselves"] = {
        "accuracy": label_accuracy(parts.dataset, test.x, test.y),
        "rmse_levels": 0.0,
        "calls": 0.0,
        "wall": 0.0,
    }
    return rows, completed


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
        title="digits: the lower half of 25 test images inpainted (VP, unconditional score)",
    )
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--n", type=int, default=1497, help="samples per guidance scale")
    parser.add_argument("--scales", type=float, nargs="+", default=[0, 1, 1.5, 2, 3, 4])
    parser.add_argument("--classifier-scales", type=float, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--particles", type=int, default=16)
    parser.add_argument("--figures", type=Path, default=None, help="where the figures go")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a smoke run (QUICK)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    nets = trained_networks(args.workdir, args.quick)
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

    rows, completed = inpainting(parts, parts.score_fn(nets.plain_net), args.particles, args.seed)
    print(
        "| lower half of 300 test digits | true digit | RMS error (grey levels) "
        "| score evaluations per image | wall (s) |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in rows.items():
        print(
            f"| {name} | {r['accuracy']:.3f} | {r['rmse_levels']:.2f} | {r['calls']:.0f} | "
            f"{r['wall']:.0f} |"
        )

    if args.figures is not None:
        args.figures.mkdir(parents=True, exist_ok=True)
        draw_tradeoff(sweeps, ref_fd, args.figures / "guidance.png")
        shown = {g: sweeps["cfg"][g] for g in (best, max(sweeps["cfg"])) if g > 0}
        draw_classes(parts, shown, labels, args.figures / "digits_classes.png")
        draw_inpainting(parts, completed, args.figures / "digits_inpainting.png")


if __name__ == "__main__":
    main()
