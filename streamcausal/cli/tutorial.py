"""``streamcausal tutorial``: the Neuromatch interventions course, reproduced (numbers and figures)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import count, epilog, non_negative_int


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "tutorial",
        help="reproduce the Neuromatch interventions tutorial: numbers and figures",
        description=(
            "Reproduce the course end to end with streamcausal.tutorial: print the "
            "two-neuron difference in means, the single-neuron and all-neuron estimates "
            "and their correlations with the true connectivity, and write the course's "
            "figures as PNG files into --out."
        ),
        epilog=epilog(
            """
            examples:
              streamcausal tutorial --out figures
              streamcausal tutorial --out figures --neurons 10 --steps 2e4
              python -m streamcausal tutorial --out /tmp/tutorial --steps 5_000

            With the defaults (6 neurons, 5000 steps) the printed numbers are the
            course's: 0.9907195190159408 and 0.987593404378358.
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="directory for the PNG figures (created if missing)")
    parser.add_argument("--neurons", type=count(2), default=6, metavar="N",
                        help="number of neurons (default: 6)")
    parser.add_argument("--steps", type=count(2), default=5000, metavar="T",
                        help="time steps per simulation (default: 5000)")
    parser.add_argument("--selected-neuron", type=non_negative_int, default=1, metavar="K",
                        help="source neuron for the single-neuron estimate (default: 1)")


def _vector(values) -> str:
    return "[" + ", ".join(repr(float(v)) for v in values) + "]"


def command(args) -> int:
    import numpy as np

    from .. import plots, tutorial
    from .._validation import check_index
    from ..report import save_figures

    n, steps = args.neurons, args.steps
    selected = check_index(args.selected_neuron, "--selected-neuron", n)
    out = args.out
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out must be a directory, got existing file {str(out)!r}")

    difference = tutorial.two_neuron_difference_in_means()
    print(f"two-neuron difference in means (seed 12, 5000 trials per arm): {difference!r}")

    A = tutorial.create_connectivity(n)
    if not np.all(np.isfinite(A)) or not np.any(A):
        raise ValueError(
            f"--neurons {n}: the course's create_connectivity({n}) (seed 42) draws no "
            "connection at all; choose another number of neurons"
        )
    standard = tutorial.simulate_neurons(A, steps)  # reseeds the global RNG itself
    # The course's numbers need create_connectivity immediately before the perturbed
    # simulation, which continues the global stream: draw nothing in between.
    A = tutorial.create_connectivity(n)
    perturbed = tutorial.simulate_neurons_perturb(A, steps)

    single = tutorial.get_perturbed_connectivity_from_single_neuron(perturbed, selected)
    R = tutorial.get_perturbed_connectivity_all_neurons(perturbed)
    with np.errstate(invalid="ignore", divide="ignore"):
        single_score = float(np.corrcoef(A[:, selected], single)[1, 0])
        all_score = tutorial.score(A, R)
    print(f"connectivity A ({n} neurons, seed 42): {np.count_nonzero(A)} nonzero weights")
    print(f"single-neuron estimate, effect of neuron {selected} onto each neuron: {_vector(single)}")
    print(f"correlation of single-neuron estimate with A[:, {selected}]: {single_score!r}")
    print(f"correlation of all-neuron estimate R with A "
          f"(corrcoef(A.T.flatten(), R.flatten())[1, 0]): {all_score!r} "
          f"(15 significant digits: {all_score:.15g})")

    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "connectivity.png": lambda: plots.plot_connectivity_graph_matrix(A),
        "activity.png": lambda: plots.plot_activity(standard.T),
        "standard_vs_perturbed.png": lambda: plots.plot_standard_vs_perturbed(standard.T, perturbed.T),
        f"true_vs_estimated_neuron{selected}.png": lambda: plots.plot_true_vs_estimated(
            single, A, selected_neuron=selected),
        "true_vs_estimated_all.png": lambda: plots.plot_true_vs_estimated(R.T, A),
        "summary.png": lambda: plots.plot_tutorial_summary(A, R.T),
    }
    for path in save_figures(figures, out, dpi=100):
        print(f"wrote {path}")
    return 0
