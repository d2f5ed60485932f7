"""The three SDEs of Song et al. (2021) on toy densities, in one figure.

For each SDE (VP, sub-VP, VE) and each density, a score network is trained with denoising score
matching and sampled with Euler-Maruyama on the reverse SDE; the figure has the data in its top row
and one row of samples per SDE.

    python examples/toy2d.py                                   # about 2 minutes on 2 CPU cores
    python examples/toy2d.py --datasets 8gaussians checkerboard moons     # 2 minutes per density

Everything here is the public API: an SDE object, a network, a loss, the training loop and
``scoresde.sample``. Each model gets 2200 updates of 1024 points (about 35 s on 2 CPU cores).
Measured on 8gaussians with the VP SDE (samples' cross-entropy minus the entropy, nats): at a batch
of 256, 2500 updates give 1.19 and 6000 give 0.46; at 1024, 2500 updates give 0.07. The gradient
noise of the denoising loss, not the number of updates, is what a short run must beat.
``python -m scoresde.run`` trains one model (10k updates of 512) and measures it.
"""

from __future__ import annotations

import argparse

import torch

import scoresde
from scoresde.plotting import point_grid
from scoresde.rundir import check_output_file
from scoresde.validation import check_int


def make_sdes() -> dict[str, tuple[scoresde.SDE, float]]:
    """The three SDEs, each with the time ``eps`` at which sampling stops and denoises.

    ``eps`` is where ``sigma(eps)`` is about 0.14, as in ``configs/toy/*.py``: Tweedie's denoised
    ``E[x_0 | x_eps]`` there is sharper than the last noisy steps of a briefly trained model. The VE
    SDE's ``sigma_max`` is of the order of the data's diameter.
    """
    return {
        "VP": (scoresde.VPSDE(beta_min=0.1, beta_max=20.0), 0.04),
        "sub-VP": (scoresde.SubVPSDE(beta_min=0.1, beta_max=20.0), 0.12),
        "VE": (scoresde.VESDE(sigma_min=0.01, sigma_max=10.0), 0.36),
    }


def fit(
    sde: scoresde.SDE, dataset: str, *, n_iters: int, batch_size: int, hidden: int, seed: int
) -> scoresde.ScoreFn:
    """Train an epsilon-predicting MLP on ``dataset`` with the likelihood-weighted DSM loss (``t``
    importance-sampled, as in ``configs/toy``); the EMA model's score function."""
    model = scoresde.get_model(
        "mlp", dim=2, hidden=hidden, depth=3, generator=torch.Generator().manual_seed(seed)
    )
    dsm = scoresde.get_loss_fn(sde, "dsm", weighting="likelihood", importance_sampling=True)

    def loss_fn(
        net: torch.nn.Module, batch: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        return dsm(scoresde.get_score_fn(sde, net, "epsilon", data_std=2.0), batch, generator)

    result = scoresde.train(
        model,
        loss_fn,
        scoresde.batch_sampler(dataset, batch_size),
        n_iters=n_iters,
        lr=2e-3,
        warmup=100,
        ema_decay=0.995,
        ema_warmup=True,
        seed=seed,
        progress=False,
    )
    return scoresde.get_score_fn(sde, result.ema_model, "epsilon", data_std=2.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["checkerboard"],
        choices=scoresde.TOY_DATASETS,
        metavar="NAME",
        help="toy densities, one column each (default: checkerboard)",
    )
    parser.add_argument("--n-iters", type=int, default=2200, help="training updates per model")
    parser.add_argument("--batch-size", type=int, default=1024, help="points per update")
    parser.add_argument("--hidden", type=int, default=128, help="width of the MLP")
    parser.add_argument("--n-samples", type=int, default=2000, help="samples per panel")
    parser.add_argument("--num-steps", type=int, default=400, help="steps of the sampler")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="toy2d.png", help="where to save the figure")
    args = parser.parse_args(argv)
    try:
        check_int("--n-iters", args.n_iters, 1)
        check_int("--batch-size", args.batch_size, 1)
        check_int("--hidden", args.hidden, 1)
        check_int("--n-samples", args.n_samples, 2)
        check_int("--num-steps", args.num_steps, 2)
        check_output_file("--out", args.out)
    except ValueError as err:
        parser.error(str(err))
    torch.manual_seed(args.seed)

    generator = torch.Generator().manual_seed(args.seed)
    rows = [
        [scoresde.get_dataset(name).sample(args.n_samples, generator) for name in args.datasets]
    ]
    for sde_name, (sde, eps) in make_sdes().items():
        row = []
        for name in args.datasets:
            score_fn = fit(
                sde,
                name,
                n_iters=args.n_iters,
                batch_size=args.batch_size,
                hidden=args.hidden,
                seed=args.seed,
            )
            result = scoresde.sample(
                sde,
                score_fn,
                (args.n_samples, 2),
                sampler="em",
                num_steps=args.num_steps,
                eps=eps,
                generator=generator,
                return_info=True,
            )
            print(f"{sde_name:7s} {name:13s} sampled with {result.nfe} score evaluations")
            row.append(result.samples)
        rows.append(row)
    figure = point_grid(rows, row_labels=["data", *make_sdes()], col_labels=args.datasets)
    figure.savefig(args.out, dpi=120)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
