"""Checkpoint conversion between HF directories and orbax, for the CodeT5+ T5 family.

`mapping` (generic rules + strict accounting), `hf_t5` (the T5 / embedding / bimodal table),
`scan` (scanned <-> unscanned layouts), `torch_pickle` (torch-free `pytorch_model.bin` reader),
`hf_io` / `orbax_io` (directory I/O), `formats` (detection), `cli` (`codet5p convert`).
"""
