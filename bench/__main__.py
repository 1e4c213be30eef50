"""``python -m bench [--quick] [--out DIR]`` — see :mod:`bench.run`."""

from bench.run import main

raise SystemExit(main())
