"""`python -m codet5p_jax.infer` == `codet5p infer` (a package: gin then sees one configurable)."""

import sys

from codet5p_jax.infer import main

sys.exit(main())
