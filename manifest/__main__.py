"""``python -m manifest build …`` / ``python -m manifest icons`` (see :mod:`manifest.build`)."""

from manifest.build import main

raise SystemExit(main())
