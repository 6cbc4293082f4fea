# Sourced by scripts/demo and scripts/test: make .venv with the package installed, once.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
STAMP=".venv/.streamcausal-installed"
WANT="$(cat pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[test]"
    echo "$WANT" > "$STAMP"
fi
export MPLBACKEND=Agg

# Numba's on-disk cache checks only the source file of the kernel it loads, not the
# files of the kernels inlined or called into it: after an edit of _kernels/rng.py,
# network.py's cached kernels would still run the old random streams. So the cache
# lives in a directory keyed to the sources of every kernel (the package's .py files
# that mention numba or _jit: _jit.py and _kernels/*.py); a change of any of them
# starts an empty one (the kernels a run needs then compile once, in the process that
# runs it or, for several seeds on a LocalCluster, once in the parent before the
# workers load them: about 22 s of CPU for the default `streamcausal run`, see
# benchmarks/bench_coldstart.py), and the directories of older keys are removed.
KERNEL_KEY="$(grep -rlE --include='*.py' 'numba|_jit' streamcausal | LC_ALL=C sort | xargs sha256sum \
    | sha256sum | cut -c1-16)"
export NUMBA_CACHE_DIR="$ROOT/.venv/numba-cache/$KERNEL_KEY"
mkdir -p "$NUMBA_CACHE_DIR"
find "$ROOT/.venv/numba-cache" -mindepth 1 -maxdepth 1 ! -name "$KERNEL_KEY" -exec rm -rf {} +
