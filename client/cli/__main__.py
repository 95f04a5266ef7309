"""`python -m cronraft.client.cli`: schedctl without its console script (the integration tests run it so)."""

import sys

from cronraft.client.cli import main

sys.exit(main())
