"""`python -m codet5p_jax.cli <command> ...` == `codet5p <command> ...`."""

import sys

from codet5p_jax.cli import main

sys.exit(main())
