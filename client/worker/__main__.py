"""`python -m cronraft.client.worker`: the same as `schedworker` (the test harnesses start workers so)."""

import sys

from cronraft.client.worker.cli import main

sys.exit(main())
