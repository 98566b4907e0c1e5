"""Triton kernels, installed as ecf_engine.kernels (DESIGN.md section 2).

    window_attention.py   fused (shifted-)window spatio-channel attention over all slabs
    cached_attention.py   one decoding step against the KV cache, with the cache append
    fixed_attention.py    the exact fixed-point attention of a decoding step (coding)

Importing a kernel module imports triton; ecf_engine.ops does that lazily, only when a
kernel is selected, so `import ecf_engine` works without triton. Each kernel's PyTorch
reference is in ecf_engine/contextformer.py; tests/test_kernels.py compares them.
"""
