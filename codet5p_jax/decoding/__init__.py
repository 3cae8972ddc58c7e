"""Jitted decoding: greedy and sampling (`sampling`), beam search (`beam`), stop sequences and
decoder prefixes, and the model glue (`generate.generate`: encoder once, KV caches, one loop)."""
