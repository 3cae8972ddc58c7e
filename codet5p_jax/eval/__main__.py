"""`python -m codet5p_jax.eval` == `codet5p eval` (a package: gin then sees one configurable)."""

import sys

from codet5p_jax.eval import main

sys.exit(main())
