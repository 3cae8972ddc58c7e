"""Shape buckets of `generate`: a sweep of prompts compiles a few programs, not one per shape.

`generate` is one `jax.jit` per input shape, so without buckets every new batch size, prompt
length, decoder-prefix length or token budget compiles a new program (seconds on a CPU at
codet5p-220m, more on an accelerator). `Buckets` rounds each of these up:

* **batch**: to the smallest of `batch_sizes` that holds it (powers of two by default: at most
  twice the rows); a batch above the largest entry to a multiple of it. The added rows repeat
  row 0 and their outputs are dropped.
* **lengths** (encoder prompt, decoder prefill, forced-prefix width, new-token budget): up to
  `length_multiple` to the next power of two, above it to the next multiple of
  `length_multiple`.

Why this length rule: padding costs in proportion to its size (the encoder and the prefill run
over the padded positions once, every decoding step attends over the padded keys and cache).
Powers of two keep short lengths short (a one-token prefill, the T5 start token, stays one
token: a multiple-of-64 rule would run 64 decoder positions for it); multiples of 64 cap the
waste of long prompts at 63 positions (a 257-token prompt pads to 320, not to 512). Up to 512
tokens that is 14 buckets (1, 2, 4, ..., 64, 128, 192, ..., 512).

Padding never changes an output: padded prompt positions are masked, padded prefill positions
sit after the real ones under a causal mask and the cache write position is rewound over them,
the budget stays the caller's (a traced value; only the arrays are wider), and each sampled
row draws from its own key (`sampling.temperature_sample`), independent of the batch size.
"""

import dataclasses

import gin

# Powers of two up to 256 rows: a sweep of batch sizes 1..256 compiles at most 9 programs.
DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclasses.dataclass(frozen=True)
class Buckets:
    """Which padded shapes `generate` compiles for (see the module docstring).

    Attributes:
      batch_sizes: Increasing batch buckets; a batch is padded to the first that holds it, or
        to a multiple of the last when larger.
      length_multiple: A power of two: lengths up to it are padded to the next power of two,
        longer ones to a multiple of it.
    """

    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    length_multiple: int = 64

    def __post_init__(self):
        sizes = tuple(int(s) for s in self.batch_sizes)
        if not sizes or min(sizes) < 1 or list(sizes) != sorted(set(sizes)):
            raise ValueError(
                f"Buckets.batch_sizes must be increasing positive ints; got {self.batch_sizes!r}."
            )
        m = int(self.length_multiple)
        if m < 1 or m & (m - 1):
            raise ValueError(
                "Buckets.length_multiple must be a power of two >= 1; "
                f"got {self.length_multiple!r}."
            )
        object.__setattr__(self, "batch_sizes", sizes)
        object.__setattr__(self, "length_multiple", m)

    def batch(self, n: int) -> int:
        """The padded batch size of `n` rows."""
        for size in self.batch_sizes:
            if n <= size:
                return size
        top = self.batch_sizes[-1]
        return -(-n // top) * top

    def length(self, n: int) -> int:
        """The padded length of `n` positions (0 stays 0: an empty axis needs no padding)."""
        if n <= 0:
            return 0
        if n <= self.length_multiple:
            return 1 << (n - 1).bit_length()
        return -(-n // self.length_multiple) * self.length_multiple


DEFAULT_BUCKETS = Buckets()

# Gin runs (`codet5p infer` / `codet5p eval`) select buckets with
# `infer.decode_buckets = @codet5p_jax.decoding.Buckets()` (None: exact shapes). Registered as
# an external configurable so that `Buckets()` called from Python never reads gin bindings.
gin.external_configurable(Buckets, module="codet5p_jax.decoding")
