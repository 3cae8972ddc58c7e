"""`python -m codet5p_jax.convert SRC DST --to {hf,orbax}` (same as `codet5p convert`)."""

import sys

from codet5p_jax.convert.cli import main

if __name__ == "__main__":
    sys.exit(main())
