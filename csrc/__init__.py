"""C++ / CUDA sources of the EGR extension, installed as ecf_engine.csrc so that ops.py finds
them (they are compiled just-in-time on first use, not imported)."""
