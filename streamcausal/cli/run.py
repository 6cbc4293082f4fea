"""``streamcausal run``: simulate under a design, stream the estimate, print a summary, write a report."""

from __future__ import annotations

import argparse
import math
import os
import shlex
from pathlib import Path

from ..engine.seed import DTYPES
from ..engine.simulation import MAX_STEPS
from . import report as report_command
from .display import ProgressBar, run_summary
from .options import PROG, Interrupted, UsageError, count, epilog, paragraph, real, seed

RUN_DEFAULTS = {
    "neurons": 6,
    "density": 0.1,
    "connectivity_seed": 42,
    "steps": 2_000_000,
    "every": 2,
    "p": 0.5,
    "clamp": "all",
    "seed": 0,
    "rng": "default",
    "dtype": "float32",
}

# The most neurons the command line accepts (the moments alone are then 8 * 10**14 bytes;
# the memory check refuses far fewer on any real machine), and the most for a report.
MAX_NEURONS = 10**7
REPORT_MAX_NEURONS = 2000
# Above this many neurons, drawing the network and the first chunk take a while: say so.
LARGE_NETWORK = 1000

# Run parameters (StoreError.parameter on a refused resume) -> the options that set them.
OPTION_OF = {
    "n_neurons": "--neurons",
    "connectivity_sha256": "--neurons/--density/--connectivity-seed",
    "design": "--every/--p/--clamp/--observe",
    "seed": "--seed/--seeds",
    "seeds": "--seed/--seeds",
    "rng": "--rng",
    "chunk_steps": "--chunk-steps",
    "n_steps": "--steps",
    "dtype": "--dtype",
    "save_trajectory": "--save-trajectory",
    "target_se": "--target-se",
}


def default_seeds() -> int:
    return os.cpu_count() or 1


def cli_chunk_steps(n_neurons: int, n_steps: int) -> int:
    """The command line's default ``--chunk-steps``: the library default, smaller for short runs.

    At most ``default_chunk_steps(n)``, and at most ``n_steps / 64`` (but at least 4096)
    so that a run of a few million steps still has dozens of chunks: a smooth progress
    bar and several convergence points (they are recorded at chunk ends).
    """
    from ..engine import default_chunk_steps

    return int(min(default_chunk_steps(n_neurons), max(4096, -(-n_steps // 64))))


def add_parser(subparsers) -> None:
    cores = default_seeds()
    parser = subparsers.add_parser(
        "run",
        help="simulate a network under a design and stream its connectivity estimate",
        description=paragraph(
            "Simulate x[t+1] = sigmoid(A x[t] + noise) under a perturbation design (or "
            "observation), fold every (stimulation, outcome) pair into streaming moments, "
            "and estimate A. Independent seeds run as Dask tasks on a LocalCluster (or an "
            "existing cluster) and are merged in a fixed order. Shows progress on stderr, "
            "prints a summary table (per seed and merged: score, mean SE, samples, steps, "
            "throughput) and writes a report of PNG figures. With no options: the "
            f"tutorial's network of 6 neurons and design, {RUN_DEFAULTS['steps']:,} steps "
            f"per seed, one seed per core ({cores} here)."
        ),
        epilog=epilog(
            """
            examples:
              streamcausal run
              streamcausal run --neurons 100 --density 0.05 --steps 1e8 --seeds 8
              streamcausal run --observe --steps 5_000_000 --seeds 1
              streamcausal run --every 4 --p 0.2 --clamp stimulated --target-se 1e-3 --steps 1e9
              streamcausal run --store runs/n100.zarr --save-trajectory --dtype float64
              streamcausal run --store runs/n100.zarr --resume      # continue after Ctrl-C or a crash
              streamcausal run --scheduler tcp://10.0.0.5:8786 --seeds 64 --steps 1e9

            Counts accept 1e8, 100_000_000 and 100000000. The score is the correlation
            of the correlation estimate with the true A over all edges; mean SE is the
            mean per-edge standard error of the effect estimate from the moments; the
            merged row's seed-to-seed SE is the same quantity from the spread between
            seeds (an independent check). With --resume, options left out are taken
            from the store; options given must match it.
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    network = parser.add_argument_group("network")
    network.add_argument("--neurons", type=count(2, MAX_NEURONS), metavar="N",
                         help=f"number of neurons (default: {RUN_DEFAULTS['neurons']})")
    network.add_argument("--density", type=real(0.0, 1.0), metavar="D",
                         help="probability of each connection, in (0, 1] "
                              f"(default: {RUN_DEFAULTS['density']}, the tutorial's)")
    network.add_argument("--connectivity-seed", type=seed, metavar="S",
                         help="random_state of create_connectivity (default: "
                              f"{RUN_DEFAULTS['connectivity_seed']}, the tutorial's)")
    design = parser.add_argument_group(
        "design", "the tutorial's design by default: clamp every 2nd step, p=0.5, clamp all")
    design.add_argument("--every", type=count(2), metavar="K",
                        help="clamp on every K-th step (default: 2)")
    design.add_argument("--p", type=real(0.0, 1.0, high_inclusive=False), metavar="P",
                        help="probability that a neuron is stimulated on a clamped step, in (0, 1) "
                             "(default: 0.5)")
    design.add_argument("--clamp", choices=("all", "stimulated"),
                        help="clamp all neurons to their 0/1 stimulation, or only the stimulated "
                             "ones to 1 (default: all)")
    design.add_argument("--observe", action="store_true",
                        help="observational run: clamp nothing and use (x[t], x[t+1]) pairs "
                             "(not with --every/--p/--clamp)")
    work = parser.add_argument_group("work")
    work.add_argument("--steps", type=count(2, MAX_STEPS), metavar="T",
                      help=f"time steps per seed (default: {RUN_DEFAULTS['steps']:,})")
    work.add_argument("--seeds", type=count(1), metavar="K",
                      help=f"number of independent seeds (default: one per core, {cores} here); "
                           "1 runs in this process without Dask")
    work.add_argument("--seed", type=seed, metavar="S",
                      help="first seed; the seeds are S, S+1, ... (default: 0)")
    work.add_argument("--chunk-steps", type=count(1, MAX_STEPS), metavar="C",
                      help="steps per chunk (default: the library's default_chunk_steps(N), at "
                           "most T/64 and at least 4096); the result depends on it")
    work.add_argument("--rng", choices=("default", "legacy"),
                      help="random streams: per-chunk streams (default) or the tutorial's "
                           "global MT19937 order")
    work.add_argument("--target-se", type=real(0.0, math.inf), metavar="X",
                      help="stop once the merged mean per-edge standard error is about X "
                           "(each seed stops at X*sqrt(K)), or at --steps")
    dask = parser.add_argument_group("parallel (several seeds)")
    dask.add_argument("--scheduler", metavar="ADDRESS",
                      help="run the seeds on an existing Dask cluster, e.g. tcp://host:8786 "
                           "(default: start a LocalCluster)")
    dask.add_argument("--workers", type=count(1), metavar="W",
                      help="worker processes of the LocalCluster (default: one per core, at "
                           "most one per seed)")
    storage = parser.add_argument_group("store")
    storage.add_argument("--store", metavar="PATH",
                         help="Zarr store for checkpoints, estimates and the trajectory; a run "
                              "with a store can be resumed")
    storage.add_argument("--resume", action="store_true",
                         help="continue the run in --store where each seed stopped")
    storage.add_argument("--overwrite", action="store_true",
                         help="replace a run already in --store")
    storage.add_argument("--save-trajectory", action="store_true",
                         help="write the (T, N) activity, stimulation and clamped arrays to --store")
    storage.add_argument("--dtype", choices=DTYPES,
                         help="storage type of the saved activity: float16 keeps about 3 significant "
                              "digits in half the bytes of float32 (default: float32)")
    storage.add_argument("--checkpoint-seconds", type=real(0.0, math.inf, low_inclusive=True),
                         metavar="S", help="checkpoint after a chunk once S seconds have passed "
                                           "since the last checkpoint; 0: after every chunk "
                                           "(default: 5)")
    output = parser.add_argument_group("output")
    output.add_argument("--report", type=Path, metavar="DIR",
                        help="directory for the report's PNG figures (default: <store>-report "
                             "beside --store, without its .zarr suffix; streamcausal-report "
                             "without a store)")
    output.add_argument("--no-report", action="store_true", help="do not write a report")
    output.add_argument("--no-progress", action="store_true", help="do not show progress on stderr")


def _check_options(args) -> None:
    """Refuse combinations of options that contradict each other, before anything runs."""
    if args.resume and args.store is None:
        raise UsageError("--resume needs --store PATH: the store of the run to continue")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite contradict each other; choose one")
    if args.save_trajectory and args.store is None:
        raise UsageError("--save-trajectory needs --store PATH to write the trajectory to")
    given = [f"--{name}" for name in ("every", "p", "clamp") if getattr(args, name) is not None]
    if args.observe and given:
        raise UsageError(f"--observe cannot be combined with {'/'.join(given)}: an observational "
                         "run clamps nothing")
    if args.scheduler is not None and args.workers is not None:
        raise UsageError("--workers sizes the LocalCluster that streamcausal starts; with "
                         "--scheduler the cluster's own workers are used")
    if args.checkpoint_seconds is not None and args.store is None:
        raise UsageError("--checkpoint-seconds needs --store PATH to write checkpoints to")
    if args.report is not None and args.report.exists() and not args.report.is_dir():
        raise UsageError(f"--report must be a directory, got existing file {str(args.report)!r}")


def resolve(args, stored=None) -> dict:
    """The run's A, design and work, from the options, the stored run (a StoreReader, on --resume) and the defaults."""
    import numpy as np

    from .._validation import is_sparse
    from ..designs import Observation, Perturbation, design_from_dict
    from ..network import TUTORIAL_MAX_NEURONS, create_connectivity

    parameters = stored.parameters if stored is not None else {}

    def pick(name, stored_name=None):
        value = getattr(args, name)
        if value is not None:
            return value
        return parameters.get(stored_name or name, RUN_DEFAULTS[name])

    network_given = any(getattr(args, name) is not None for name in ("neurons", "density", "connectivity_seed"))
    from_store = stored is not None and not network_given
    if from_store:
        A = stored.connectivity()  # a scipy csc_array for a sparse store: kept sparse
        neurons = A.shape[0]
    else:
        neurons, density, cseed = (RUN_DEFAULTS[name] if getattr(args, name) is None else getattr(args, name)
                                   for name in ("neurons", "density", "connectivity_seed"))

    stored_design = parameters.get("design", {})
    design_given = args.observe or any(getattr(args, name) is not None for name in ("every", "p", "clamp"))
    if stored is not None and not design_given and stored_design:
        design = design_from_dict(stored_design)
    elif args.observe:
        design = Observation()
    else:
        base = {name: RUN_DEFAULTS[name] for name in ("every", "p", "clamp")}
        if stored_design.get("kind") == "perturbation":
            base.update({name: stored_design[name] for name in base if name in stored_design})
        base.update({name: getattr(args, name) for name in base if getattr(args, name) is not None})
        design = Perturbation(**base)

    stored_seeds = [int(s) for s in parameters.get("seeds") or []]
    if args.seeds is not None or args.seed is not None or not stored_seeds:
        first = args.seed if args.seed is not None else (stored_seeds[0] if stored_seeds else RUN_DEFAULTS["seed"])
        number = args.seeds if args.seeds is not None else (len(stored_seeds) or default_seeds())
        if first + number - 1 > 2**32 - 1:
            raise UsageError(f"--seed {first} with --seeds {number} runs past the largest seed 2**32 - 1")
        seeds = list(range(first, first + number))
    else:
        seeds = stored_seeds

    n_steps = int(pick("steps", "n_steps"))
    if args.chunk_steps is not None:
        chunk_steps = args.chunk_steps
    else:
        chunk_steps = parameters.get("chunk_steps") or cli_chunk_steps(neurons, n_steps)
    save_trajectory = bool(args.save_trajectory or parameters.get("save_trajectory"))
    if from_store:
        nnz = A.nnz if is_sparse(A) else int(np.count_nonzero(A))
    else:
        nnz = None if neurons <= TUTORIAL_MAX_NEURONS else int(density * neurons * neurons)
    _check_memory(args, neurons, nnz, int(chunk_steps), n_steps, design, save_trajectory,
                  processes=_local_processes(args, len(seeds)), drawn=not from_store)
    if from_store:
        network = f"{neurons} neurons (connectivity from the store)"
    else:
        if neurons > LARGE_NETWORK:
            print(f"drawing a {neurons:,}-neuron network (sparse above {TUTORIAL_MAX_NEURONS} neurons) ...",
                  flush=True)
        A = create_connectivity(neurons, density, random_state=cseed)
        network = f"{neurons} neurons (density {density:g}, connectivity seed {cseed})"
    edges = int(A.nnz) if is_sparse(A) else int(np.count_nonzero(A))
    network += f", {edges} connection{'s' if edges != 1 else ''}"

    target_se = args.target_se if args.target_se is not None else parameters.get("target_se")
    return {
        "A": A, "network": network, "design": design, "seeds": seeds, "n_steps": n_steps,
        "chunk_steps": int(chunk_steps), "rng": pick("rng"), "dtype": pick("dtype"),
        "save_trajectory": save_trajectory, "target_se": target_se,
    }


def _local_processes(args, n_seeds) -> int:
    """How many seeds run at once on this machine: one in this process, or one per LocalCluster worker."""
    if n_seeds == 1 and args.scheduler is None:
        return 1
    if args.scheduler is not None:
        return 0  # the seeds run on the cluster's machines; only this process's own share is checked
    return args.workers or min(default_seeds(), n_seeds)


def _check_memory(args, neurons, nnz, chunk_steps, n_steps, design, save_trajectory, processes, drawn) -> None:
    """Refuse, in one line and before anything is drawn or allocated, a run this machine cannot hold."""
    from ..engine.simulation import available_memory, format_bytes, memory_needed

    parts = memory_needed(neurons, chunk_steps, design, save_trajectory, nnz, n_steps=n_steps,
                          store=args.store is not None)
    connectivity = parts.pop("connectivity")
    # This process holds A (drawing it takes about twice its final size); each seed running at
    # once holds the rest, and a LocalCluster worker its own copy of A too.
    workers = processes if processes > 1 else 0
    needed = (2 if drawn else 1) * connectivity + max(1, processes) * sum(parts.values()) + workers * connectivity
    available = available_memory()
    if available is None or needed <= available:
        return
    advice = []
    if parts["chunk buffers"] + parts["trajectory buffers"] > needed / 4:
        advice.append("a smaller --chunk-steps")
    if not advice or parts["moments"] + connectivity > needed / 4:
        advice.append("fewer --neurons")
    if nnz is not None:
        advice.append("a lower --density")
    if processes > 1:
        advice.append("fewer --workers")
    raise UsageError(f"--neurons {neurons} with --chunk-steps {chunk_steps} needs about {format_bytes(needed)} of "
                     f"memory but {format_bytes(available)} is available; use " + ", ".join(advice))


def describe_design(design) -> str:
    if getattr(design, "kind", None) == "observation":
        return "observation (no clamping; pairs x[t], x[t+1])"
    return f"perturbation every {design.every} steps, p={design.p:g}, clamp {design.clamp}"


def resume_command(argv) -> str:
    """The command line that resumes this run: the same options, --resume, no --overwrite."""
    words = [word for word in argv if word != "--overwrite"]
    if "--resume" not in words:
        words.append("--resume")
    return f"{PROG} " + shlex.join(words)


def _store_problem(error, args) -> UsageError:
    """A StoreError as the one line the command line prints, in terms of its options."""
    if error.parameter == "mode":
        if args.resume:
            return UsageError(f"--resume: {error}")
        return UsageError(f"store {args.store} already holds a run; pass --resume to continue it "
                          "or --overwrite to replace it")
    if error.parameter in OPTION_OF:
        return UsageError(f"{error}; it is set by {OPTION_OF[error.parameter]} "
                          "(leave it out to use the stored value)")
    return UsageError(f"--store: {error}")


def _open_store(args, spec):
    """The Store to run into (None without --store), after checking what is at --store."""
    from ..api import Store
    from ..io.store import StoreError, check_run_location, local_path

    if args.store is None:
        return None
    mode = "r+" if args.resume else "w" if args.overwrite else "w-"
    try:
        check_run_location(args.store, mode)
    except StoreError as error:
        raise _store_problem(error, args) from None
    local = local_path(args.store)  # absolute: Dask workers may run in another directory
    options = {} if args.checkpoint_seconds is None else {"checkpoint_seconds": args.checkpoint_seconds}
    return Store(str(local) if local is not None else args.store, mode=mode,
                 save_trajectory=spec["save_trajectory"], dtype=spec["dtype"], **options)


def _connect(address):
    """A Dask client of the scheduler at ``address``; a one-line error when it cannot be reached."""
    from ..distributed import open_client

    try:
        client, _ = open_client(address)
    except ValueError as error:
        raise UsageError(f"--scheduler: cannot connect to the scheduler at {address!r} "
                         f"({error.__context__ or error})") from None
    return client


def _quiet_dask() -> None:
    """Keep Dask's own logging and warnings off the terminal (here and in worker processes)."""
    import logging
    import warnings

    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    warnings.filterwarnings("ignore", message=r"Port \d+ is already in use", category=UserWarning)
    import distributed  # noqa: F401  (configures its loggers on import; then quiet them)

    for name in ("distributed", "distributed.nanny", "distributed.worker", "distributed.scheduler",
                 "distributed.core", "distributed.comm", "tornado"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _interrupted(args) -> Interrupted:
    from ..io.store import is_run_store

    if args.store is not None and is_run_store(args.store):
        return Interrupted(f"interrupted; the store {args.store} is resumable: {resume_command(args._argv)}")
    if args.store is not None:
        return Interrupted("interrupted before the run store was created; nothing to resume")
    return Interrupted("interrupted; nothing was saved (run with --store PATH to be able to resume)")


def _print_plan(args, spec, several, workers) -> None:
    """The two lines that say what is about to run, and where."""
    seeds = spec["seeds"]
    where = "this process"
    if several and args.scheduler is not None:
        where = f"the Dask cluster at {args.scheduler}"
    elif several:
        where = f"a LocalCluster of {workers} worker{'s' if workers != 1 else ''}"
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"{len(seeds)} seeds ({seeds[0]}..{seeds[-1]})"
    print(f"{PROG} run: {spec['network']}; {describe_design(spec['design'])}")
    print(f"  {seed_text} x {spec['n_steps']:,} steps, chunks of {spec['chunk_steps']:,} steps, "
          f"rng {spec['rng']}, on {where}"
          + (f"; store {args.store}" + (" (resuming)" if args.resume else "") if args.store else "")
          + (f"; target mean SE {spec['target_se']:g}" if spec["target_se"] is not None else ""),
          flush=True)
    n = spec["A"].shape[0]
    if n > LARGE_NETWORK:
        print(f"  each chunk of {spec['chunk_steps']:,} steps x {n:,} neurons takes a while; progress shows after "
              "the first", flush=True)


def command(args) -> int:
    from .._jit import notify_compiling
    from ..api import Seeds, run
    from ..io.store import StoreError, StoreReader
    from ..progress import Progress

    _check_options(args)
    stored = None
    if args.resume:
        try:
            stored = StoreReader.open_run(args.store)
        except StoreError as error:
            raise UsageError(f"--resume: {error}") from None
    spec = resolve(args, stored)
    seeds = spec["seeds"]
    several = len(seeds) > 1 or args.scheduler is not None
    if not several and args.workers is not None:
        raise UsageError(f"--workers {args.workers} applies when seeds run on Dask; "
                         "with --seeds 1 the run stays in this process")
    store = _open_store(args, spec)
    workers = None
    if several and args.scheduler is None:
        workers = args.workers or min(default_seeds(), len(seeds))
    _print_plan(args, spec, several, workers)

    client = None
    display = ProgressBar(enabled=not args.no_progress, resuming=bool(args.resume))
    try:
        if several:
            _quiet_dask()
            if args.scheduler is not None:
                client = _connect(args.scheduler)
        # On a cold Numba cache the first chunk (or, with several seeds, the compile in
        # this process before the workers start) compiles for a while: say so once.
        compiling = Progress(0, spec["n_steps"] * len(seeds), phase="compiling")
        with notify_compiling(lambda: display(compiling)):
            result = run(spec["A"], spec["n_steps"], design=spec["design"],
                         seed=Seeds(seeds, client=client, workers=workers) if several else seeds[0],
                         chunk_steps=spec["chunk_steps"], rng=spec["rng"], store=store,
                         target_se=spec["target_se"], progress=display)
    except KeyboardInterrupt:
        display.close()
        raise _interrupted(args) from None
    except StoreError as error:
        raise _store_problem(error, args) from None
    finally:
        display.close()
        if client is not None:
            from ..distributed import close_client

            close_client(client)

    print()
    print(run_summary(result, spec["A"], chunk_steps=spec["chunk_steps"], n_steps=spec["n_steps"],
                      target_se=spec["target_se"]))
    if args.store is not None:
        print(f"store: {args.store}")
    if not args.no_report and spec["A"].shape[0] > REPORT_MAX_NEURONS:
        print(f"no report: its n x n figures are not drawn above {REPORT_MAX_NEURONS:,} neurons (--no-report "
              "skips this note)")
    elif not args.no_report:
        out = args.report if args.report is not None else report_command.default_out_dir(args.store)
        if args.store is not None:
            report_command.write(args.store, out, option="--store")
        else:
            report_command.write(result, out, A=spec["A"])
    return 0
