"""One seed's stream: chunk sizing, the simulation, and the seed loop with its checkpoints."""

from .seed import DTYPES, Plan, SeedOutcome, run_seed
from .simulation import RNG_MODES, Simulation, Trajectory, check_simulation_arguments, default_chunk_steps, simulate

__all__ = [
    "DTYPES", "RNG_MODES", "Plan", "SeedOutcome", "Simulation", "Trajectory",
    "check_simulation_arguments", "default_chunk_steps", "run_seed", "simulate",
]
