"""A trained model's density, from the probability-flow ODE, next to the true density.

A score model defines a density: the probability-flow ODE carries each point ``x`` to ``z = x(T)``
and ``log p(x) = log p_T(z) + int div v dt`` (``scoresde.log_likelihood``). This example trains a
VP model on a density whose log-density is known, evaluates the model's log-density on a grid and
on held-out data, and reports the held-out NLL against the data's entropy: their difference is
``KL(data || model)``, estimated on the same points as ``mean(log p_data(x) - log p_model(x))``.

    python examples/likelihood_2d.py                      # under a minute on 2 CPU cores
    python examples/likelihood_2d.py --dataset checkerboard
    python examples/likelihood_2d.py --n-iters 300 --grid 24  # a quick look
"""

from __future__ import annotations

import argparse

import torch

import scoresde
from scoresde.metrics import mean_and_stderr
from scoresde.plotting import plot_density
from scoresde.rundir import check_output_file
from scoresde.validation import check_int

EXACT = tuple(
    name for name in scoresde.TOY_DATASETS if scoresde.get_dataset(name).has_exact_log_prob
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="8gaussians", choices=EXACT)
    parser.add_argument("--n-iters", type=int, default=2500, help="training updates")
    parser.add_argument("--batch-size", type=int, default=1024, help="points per update")
    parser.add_argument("--hidden", type=int, default=128, help="width of the MLP")
    parser.add_argument("--n-eval", type=int, default=1000, help="held-out points for the NLL")
    parser.add_argument("--grid", type=int, default=64, help="grid points per axis")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="likelihood_2d.png", help="where to save the figure")
    args = parser.parse_args(argv)
    try:
        check_int("--n-iters", args.n_iters, 1)
        check_int("--batch-size", args.batch_size, 1)
        check_int("--hidden", args.hidden, 1)
        check_int("--n-eval", args.n_eval, 2)
        check_int("--grid", args.grid, 2)
        check_output_file("--out", args.out)
    except ValueError as err:
        parser.error(str(err))
    torch.manual_seed(args.seed)

    sde = scoresde.VPSDE()
    dataset = scoresde.get_dataset(args.dataset)
    model = scoresde.get_model(
        "mlp",
        dim=2,
        hidden=args.hidden,
        depth=3,
        generator=torch.Generator().manual_seed(args.seed),
    )
    # The likelihood weighting makes the loss a bound on the NLL (Song et al., 2021b); importance
    # sampling of t keeps its variance low.
    dsm = scoresde.get_loss_fn(sde, "dsm", weighting="likelihood", importance_sampling=True)

    def loss_fn(
        net: torch.nn.Module, batch: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        return dsm(scoresde.get_score_fn(sde, net, "epsilon", data_std=2.0), batch, generator)

    result = scoresde.train(
        model,
        loss_fn,
        scoresde.batch_sampler(dataset, args.batch_size),
        n_iters=args.n_iters,
        lr=2e-3,
        warmup=100,
        ema_decay=0.998,
        ema_warmup=True,
        seed=args.seed,
        progress=False,
    )
    score_fn = scoresde.get_score_fn(sde, result.ema_model, "epsilon", data_std=2.0)

    generator = torch.Generator().manual_seed(args.seed)
    x = dataset.sample(args.n_eval, generator)
    info = scoresde.log_likelihood(sde, score_fn, x, return_info=True)
    nll, nll_se = mean_and_stderr(-info.logp)
    kl, kl_se = mean_and_stderr(dataset.log_prob(x) - info.logp)
    entropy, _ = dataset.entropy()
    print(f"held-out NLL {nll:.3f} +- {nll_se:.3f} nats, entropy {entropy:.3f} nats")
    print(f"KL(data || model) = NLL - entropy = {kl:.3f} +- {kl_se:.3f} nats")
    print(f"(the ODE solver used {info.nfe} score evaluations)")

    lim = 1.1 * float(x.abs().max())
    axis = torch.linspace(-lim, lim, args.grid)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([xs.flatten(), ys.flatten()], dim=1)
    model_logp = scoresde.log_likelihood(sde, score_fn, grid).reshape(args.grid, args.grid)
    true_logp = dataset.log_prob(grid).reshape(args.grid, args.grid)
    plot_density((-lim, lim, -lim, lim), model_logp, true_logp).savefig(args.out, dpi=120)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
