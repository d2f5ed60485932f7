"""The three SDEs of Song et al. (2021) on three toy densities, in one figure.

For each SDE (VP, sub-VP, VE) and each density, a small score network is trained with denoising
score matching and sampled with the probability-flow ODE; the figure has the data in its top row and
one row of samples per SDE.

    python examples/toy2d.py                      # about 2 minutes on 2 CPU cores
    python examples/toy2d.py --n-iters 300 --out /tmp/toy2d.png     # a quick look

Everything here is the public API: an SDE object, a network, a loss, the training loop and
``scoresde.sample``.
"""

from __future__ import annotations

import argparse

import torch

import scoresde
from scoresde.plotting import point_grid

DATASETS = ("8gaussians", "checkerboard", "swissroll")


def make_sdes() -> dict[str, scoresde.SDE]:
    """The three SDEs; the VE SDE's ``sigma_max`` is of the order of the data's diameter."""
    return {
        "VP": scoresde.VPSDE(beta_min=0.1, beta_max=20.0),
        "sub-VP": scoresde.SubVPSDE(beta_min=0.1, beta_max=20.0),
        "VE": scoresde.VESDE(sigma_min=0.01, sigma_max=10.0),
    }


def fit(
    sde: scoresde.SDE, dataset: str, *, n_iters: int, hidden: int, seed: int
) -> scoresde.ScoreFn:
    """Train an epsilon-predicting MLP on ``dataset`` and return the EMA model's score function."""
    model = scoresde.get_model(
        "mlp", dim=2, hidden=hidden, depth=3, generator=torch.Generator().manual_seed(seed)
    )
    dsm = scoresde.get_loss_fn(sde, "dsm")

    def loss_fn(
        net: torch.nn.Module, batch: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        return dsm(scoresde.get_score_fn(sde, net, "epsilon", data_std=2.0), batch, generator)

    result = scoresde.train(
        model,
        loss_fn,
        scoresde.batch_sampler(dataset, 256),
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
    parser.add_argument("--n-iters", type=int, default=2000, help="training updates per model")
    parser.add_argument("--hidden", type=int, default=96, help="width of the MLP")
    parser.add_argument("--n-samples", type=int, default=3000, help="samples per panel")
    parser.add_argument("--num-steps", type=int, default=40, help="RK4 steps of the ODE sampler")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="toy2d.png", help="where to save the figure")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)

    generator = torch.Generator().manual_seed(args.seed)
    rows = [[scoresde.get_dataset(name).sample(args.n_samples, generator) for name in DATASETS]]
    for sde_name, sde in make_sdes().items():
        row = []
        for name in DATASETS:
            score_fn = fit(sde, name, n_iters=args.n_iters, hidden=args.hidden, seed=args.seed)
            result = scoresde.sample(
                sde,
                score_fn,
                (args.n_samples, 2),
                sampler="ode",
                method="rk4",
                num_steps=args.num_steps,
                generator=generator,
                return_info=True,
            )
            print(f"{sde_name:7s} {name:13s} sampled with {result.nfe} score evaluations")
            row.append(result.samples)
        rows.append(row)
    figure = point_grid(rows, row_labels=["data", *make_sdes()], col_labels=list(DATASETS))
    figure.savefig(args.out, dpi=120)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
