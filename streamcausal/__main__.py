"""``python -m streamcausal``: the command line."""

from .cli import main

raise SystemExit(main())
