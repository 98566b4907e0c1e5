"""Triton kernels, installed as ecf_engine.kernels (DESIGN.md section 2).

Empty for now: the fused (shifted-)window attention and cached-attention kernels are
issue 4. Until then every op runs through its PyTorch reference in ecf_engine.
"""
