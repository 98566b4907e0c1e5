"""Triton kernels, installed as ecf_engine.kernels (DESIGN.md section 2).

    window_attention.py   fused (shifted-)window spatio-channel attention over all slabs
    cached_attention.py   one decoding step against the KV cache, with the cache append
    fixed_attention.py    the exact fixed-point attention of a decoding step (coding)

Importing a kernel module imports triton; ecf_engine.ops.triton_kernel does that lazily,
only when a kernel is selected, so `import ecf_engine` works without triton. The PyTorch
references and the rules that pick a kernel sit with the op: ecf_engine/attention.py (window /
cached attention) and ecf_engine/fixedpoint.py (fixed attention); tests/test_kernels.py and
tests/test_kernels_e2e.py compare them.
"""
