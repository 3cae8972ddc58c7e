"""`python -m codet5p_jax.train` == `codet5p train`."""

import sys

from codet5p_jax.train.main import main

sys.exit(main())
