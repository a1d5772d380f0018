"""`python -m job` is the same as the `relayer-job` console script."""

from job.cli.main import main

raise SystemExit(main())
