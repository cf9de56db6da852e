"""Allow ``python -m countyread``."""

from countyread.cli import main

raise SystemExit(main())
