"""Format-3 coding of y: integer-only GMM tables and rANS over parallel substreams.

The work happens in csrc/rans.c (ctypes, built with ops.native()); this module holds the
integer tables it needs, the payload layout, and a pure PyTorch / Python reference of
everything (used where no C compiler exists, and by the tests to check the C code).

Tables. From the integer GMM parameters (entropy.quantize_fixed) every element gets a
window c-R .. c+R and cumulative frequencies in units of 2**-PREC, with integer
arithmetic only (see csrc/rans.c for the formulas). The four small lookup tables
(mixture weight exp, sigma, 1/sigma, the normal CDF) are computed here once in float64
and rounded; tests check that no entry lies near a rounding tie, so they are the same on
every machine, and so are the frequency tables and the coded bits.

Substreams. Each coding group is split into bands of latent rows; band s of every group
goes into substream s, an independent rANS stream. The decoder decodes the bands of a
group on several threads at once (the C loop runs without the GIL); a single thread
decodes the same payload too.

Formats 3 and 4 differ only in what a substream costs besides its symbols:

    format 3   encoder state starts at RANS_L; payload (little-endian uint32 words):
               word 0 the substream count S, words 1 .. S the word count of each
               substream, then the substreams one after the other
    format 4   encoder state starts at 1, which saves ~4 bytes per substream (csrc/rans.c);
               payload: the word counts of substreams 0 .. S-2 as LEB128 varints (S comes
               from the image size, the last count from the payload size), then the
               substreams (uint32 words)

On Kodak (4 substreams per image) format 3 costs ~44 bytes per image more than a single
range-coded stream, format 4 ~21 (benchmarks/formats.py).
"""
from __future__ import annotations

import ctypes
import math

import numpy as np
import torch

from . import ops
from .entropy import (ESCAPE_CHUNK_BITS, ESCAPE_LENGTH_BITS, LOG_SCALE_RANGE, LOG_SCALE_STEPS, LOGIT_STEPS,
                      MAX_ESCAPE_BITS, MEAN_STEPS, escape_fields, overflow, read_escape, window_index)
from .errors import BitstreamError

PREC = 20                       # frequencies and cumulative tables in units of 2**-PREC
TOT = 1 << PREC
RANS_L = 1 << 31                # bottom of the normalized state interval [RANS_L, RANS_L << 32) (rans64)
GMM_BUCKETS = (2, 4, 8, 16, 32, 64, 128)   # window half-widths R: few sizes, so few table shapes
MAX_R = GMM_BUCKETS[-1]
WINDOW_SIGMAS = 8               # a window reaches 8 sigma past every component's mean (tails < 1e-15)
MAX_K = 16                      # mixture components per element that csrc/rans.c takes
EXPW_BITS = 16                  # mixture weights exp(-d / LOGIT_STEPS) in units of 2**-16
Z_BITS = 20                     # (x - mean) / sigma in units of 2**-20
PHI_STEP_BITS = 10              # the normal CDF table's step: 2**-10 in z, linearly interpolated
PHI_REACH = 8                   # the table covers z in [-8, 8]; beyond, Phi is 0 or 1
PHI_BITS = 32                   # Phi values in units of 2**-32
# (start, freq) pairs per coded value at most: the symbol, the escape's length, its chunks
MAX_PAIRS = 2 + -(-MAX_ESCAPE_BITS // ESCAPE_CHUNK_BITS)
FORMATS = (3, 4)
MAX_BANDS = 8                   # substreams per image
ROWS_PER_BAND = 8               # target band height in latent rows
_ERRORS = {2: "escape code too long", 4: "bad parameters"}
_MAX_VARINT_BYTES = 5            # word counts below 2**35

# csrc/rans.c's constants, in the order ecf_rans_constants() reports them
C_CONSTANTS = {"PREC": PREC, "RANS_L": RANS_L, "MAX_R": MAX_R, "MEAN_STEPS": MEAN_STEPS,
               "WINDOW_SIGMAS": WINDOW_SIGMAS, "Z_BITS": Z_BITS, "PHI_STEP_BITS": PHI_STEP_BITS,
               "PHI_REACH": PHI_REACH, "PHI_BITS": PHI_BITS, "ESCAPE_LENGTH_BITS": ESCAPE_LENGTH_BITS,
               "ESCAPE_CHUNK_BITS": ESCAPE_CHUNK_BITS, "MAX_ESCAPE_BITS": MAX_ESCAPE_BITS, "MAX_K": MAX_K}


def _tables() -> dict[str, np.ndarray]:
    """The lookup tables, as float64 before rounding ('*_float') and as int64."""
    expw = []                                      # up to and with the first entry that rounds to 0
    while not expw or round(expw[-1]) != 0:
        expw.append((1 << EXPW_BITS) * math.exp(-len(expw) / LOGIT_STEPS))
    ks = range(LOG_SCALE_RANGE[0], LOG_SCALE_RANGE[1] + 1)
    sig32 = [MEAN_STEPS * math.exp(k / LOG_SCALE_STEPS) for k in ks]               # sigma in mean units
    invs = [(1 << Z_BITS) / (MEAN_STEPS * math.exp(k / LOG_SCALE_STEPS)) for k in ks]
    step = 1 << PHI_STEP_BITS
    phi = [2 ** PHI_BITS * 0.5 * math.erfc(-(i / step - PHI_REACH) / math.sqrt(2))
           for i in range(2 * PHI_REACH * step + 1)]
    out = {"expw_float": expw, "invs_float": invs, "phi_float": phi, "sig32_float": sig32}
    out = {k: np.array(v) for k, v in out.items()}
    out.update(expw=np.round(out["expw_float"]), invs=np.round(out["invs_float"]), phi=np.round(out["phi_float"]),
               sig32=np.ceil(out["sig32_float"]), buckets=np.array(GMM_BUCKETS, dtype=np.float64))
    for key in ("expw", "invs", "phi", "sig32", "buckets"):
        out[key] = out[key].astype(np.int64)
    return out


TABLES = _tables()


class _CTables(ctypes.Structure):
    _fields_ = [("expw", ctypes.c_void_p), ("n_expw", ctypes.c_int64), ("sig32", ctypes.c_void_p),
                ("invs", ctypes.c_void_p), ("k_min", ctypes.c_int64), ("n_k", ctypes.c_int64),
                ("phi", ctypes.c_void_p), ("buckets", ctypes.c_void_p), ("n_buckets", ctypes.c_int64)]


_C_TABLES = _CTables(TABLES["expw"].ctypes.data, len(TABLES["expw"]), TABLES["sig32"].ctypes.data,
                     TABLES["invs"].ctypes.data, LOG_SCALE_RANGE[0], len(TABLES["sig32"]),
                     TABLES["phi"].ctypes.data, TABLES["buckets"].ctypes.data, len(TABLES["buckets"]))


def rule(device: str, dtype=None, grad: bool = False) -> ops.Choice:
    """y is coded on the CPU whatever device the networks use; ECF_BACKEND does not apply: the
    Python version is the fallback and the tests' reference (~100x slower)."""
    return ops.Choice("c", "csrc/rans.c whenever it builds, else the Python version (CPU, any setting)")


ops.register("rans", rule)


def c_constants(lib) -> dict[str, int]:
    """The constants a C library was compiled with (csrc/rans.c), by C_CONSTANTS's names."""
    out = np.zeros(len(C_CONSTANTS), dtype=np.int64)
    count = lib.ecf_rans_constants(ops.address(out), len(out))
    return dict(zip(C_CONSTANTS, out.tolist())) if count == len(C_CONSTANTS) else {}


_checked: dict[int, str] = {}        # id(lib) -> '' (constants agree) or what differs


def _lib():
    """The C coder, or None: run the Python version (also where the library's constants differ
    from this module's, warned once)."""
    lib = ops.native()
    if isinstance(lib, str):
        ops.record("rans", "cpu", "python", lib)
        return None
    if id(lib) not in _checked:
        got = c_constants(lib)
        _checked[id(lib)] = ", ".join(f"{k}: C {got.get(k)}, Python {v}" for k, v in C_CONSTANTS.items()
                                      if got.get(k) != v)
        if _checked[id(lib)]:
            ops.warn_once(f"csrc/rans.c does not match rans.py ({_checked[id(lib)]}); using the Python coder")
    if _checked[id(lib)]:
        ops.record("rans", "cpu", "python", f"C constants differ: {_checked[id(lib)]}")
        return None
    ops.record("rans", "cpu", "c", "compiled csrc/rans.c")
    return lib


def _params(q) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer parameters (logits, means, log-scales), each (n, K) -> contiguous int32 arrays."""
    return tuple(np.ascontiguousarray(t.cpu().numpy(), dtype=np.int32) for t in q)


# -- PyTorch reference of the tables --------------------------------------------------------

def reference_tables(q, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centres c (n,), half-widths R (n,) and cumulative tables (n, 2*MAX_R+2) (entries past
    2R+1 zero), with the integer formulas of csrc/rans.c in vectorized int64 PyTorch, chunk
    elements at a time (a chunk's intermediates take ~25 MB per 1,000 elements)."""
    n = q[0].shape[0]
    if n > chunk:
        parts = [reference_tables(tuple(t[i:i + chunk] for t in q), chunk) for i in range(0, n, chunk)]
        return tuple(torch.cat(p) for p in zip(*parts))
    lg, mu, ks = (t.long() for t in q)
    T = {k: torch.from_numpy(v) for k, v in TABLES.items() if not k.endswith("_float")}
    e = T["expw"][(lg.amax(-1, keepdim=True) - lg).clamp_max(len(T["expw"]) - 1)]
    w = e.sum(-1)
    c = torch.div(2 * (e * mu).sum(-1) + MEAN_STEPS * w, 2 * MEAN_STEPS * w, rounding_mode="floor")
    k = ks - LOG_SCALE_RANGE[0]
    reach = ((mu - MEAN_STEPS * c[:, None]).abs() + WINDOW_SIGMAS * T["sig32"][k]).amax(-1)
    fits = MEAN_STEPS * T["buckets"][None, :] >= reach[:, None]
    R = torch.where(fits.any(1), T["buckets"][fits.long().argmax(1)], T["buckets"][-1])
    j = torch.arange(2 * MAX_R)
    x32 = MEAN_STEPS * (c[:, None] - R[:, None] + j) + MEAN_STEPS // 2         # bin edges (n, 2*MAX_R)
    z = (x32[..., None] - mu[:, None, :]) * T["invs"][k][:, None, :]
    zmax, shift = PHI_REACH << Z_BITS, Z_BITS - PHI_STEP_BITS
    u = (z.clamp(-zmax, zmax - 1) + zmax)
    i, f = u >> shift, u & ((1 << shift) - 1)
    phi = T["phi"][i] + (((T["phi"][(i + 1).clamp_max(len(T["phi"]) - 1)] - T["phi"][i]) * f) >> shift)
    phi = torch.where(z <= -zmax, 0, torch.where(z >= zmax, 1 << PHI_BITS, phi))
    mix = (e[:, None, :] * phi).sum(-1)
    spare = TOT - (2 * R + 1)
    inner = ((torch.div(mix, w[:, None], rounding_mode="floor") * spare[:, None]) >> PHI_BITS) + j + 1
    cum = torch.cat([torch.zeros_like(c)[:, None], inner, torch.zeros_like(c)[:, None]], 1)
    cum = torch.where(torch.arange(2 * MAX_R + 2) <= 2 * R[:, None], cum, 0)      # past the window: unused
    cum[torch.arange(len(c)), 2 * R + 1] = TOT
    return c, R, cum


def c_tables(q) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same as reference_tables, from the C code (for tests)."""
    lib = _lib()
    if lib is None:
        raise RuntimeError("the C library is not available")
    lg, mu, ks = _params(q)
    n, K = lg.shape
    c, R = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    cum = np.zeros((n, 2 * MAX_R + 2), dtype=np.uint32)
    if lib.ecf_gmm_tables(ctypes.byref(_C_TABLES), ops.address(lg), ops.address(mu), ops.address(ks), n, K, ops.address(c), ops.address(R), ops.address(cum)):
        raise ValueError("parameters outside the tables")
    cum = torch.from_numpy(cum.astype(np.int64))
    cum[torch.arange(2 * MAX_R + 2)[None, :] > 2 * torch.from_numpy(R)[:, None] + 1] = 0
    return torch.from_numpy(c), torch.from_numpy(R), cum


# -- symbols: (start, freq) pairs ----------------------------------------------------------

def _symbols_reference(q, values: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    c, R, cum = reference_tables(q)
    idx = window_index(values, c, R)
    over = overflow(values, c, R)
    start, freq = [], []
    for i, r, row, o in zip(idx.tolist(), R.tolist(), cum.tolist(), over.tolist()):
        start.append(row[i])
        freq.append(row[i + 1] - row[i])
        if i in (0, 2 * r):
            for value, width in escape_fields(o):       # uniform fields: width bits of the PREC
                start.append(value << (PREC - width))
                freq.append(1 << (PREC - width))
    return np.array(start, dtype=np.uint32), np.array(freq, dtype=np.uint32)


def symbols(q, values: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(start, freq) of every symbol coding the int64 values (n,) under parameters q, in
    decoding order (each value, then its escape)."""
    lib = _lib()
    if lib is None:
        return _symbols_reference(q, values)
    lg, mu, ks = _params(q)
    n, K = lg.shape
    vals = np.ascontiguousarray(values.cpu().numpy(), dtype=np.int64)
    start, freq = np.empty(MAX_PAIRS * n, dtype=np.uint32), np.empty(MAX_PAIRS * n, dtype=np.uint32)
    count = lib.ecf_gmm_symbols(ctypes.byref(_C_TABLES), ops.address(lg), ops.address(mu), ops.address(ks),
                                ops.address(vals), n, K, ops.address(start), ops.address(freq))
    if count == -2:
        raise ValueError(f"a value lies beyond its coding window by more than the escape code carries "
                         f"(2**{MAX_ESCAPE_BITS + 1} - 2)")
    if count < 0:
        raise ValueError(f"parameters outside the tables (at most {MAX_K} mixture components)")
    return start[:count], freq[:count]


# -- rANS --------------------------------------------------------------------------------------

def initial_state(version: int) -> int:
    """The encoder's first state, and the state a clean decode ends in."""
    if version not in FORMATS:
        raise ValueError(f"rANS coding format {version} unknown; formats: {FORMATS}")
    return RANS_L if version == 3 else 1


def _encode_reference(start: np.ndarray, freq: np.ndarray, x0: int) -> np.ndarray:
    x, out = x0, []
    for s, f in zip(start[::-1].tolist(), freq[::-1].tolist()):
        if x >= ((RANS_L >> PREC) << 32) * f:
            out.append(x & 0xFFFFFFFF)
            x >>= 32
        x = ((x // f) << PREC) + (x % f) + s
    out += [x >> 32, x & 0xFFFFFFFF]
    return np.array(out[::-1], dtype=np.uint32)


def rans_encode(start: np.ndarray, freq: np.ndarray, version: int = FORMATS[-1]) -> np.ndarray:
    """Encode (start, freq) pairs, given in decoding order, into 32-bit words."""
    x0 = initial_state(version)
    lib = _lib()
    if lib is None:
        return _encode_reference(start, freq, x0)
    start, freq = np.ascontiguousarray(start, dtype=np.uint32), np.ascontiguousarray(freq, dtype=np.uint32)
    cap = len(start) + 2
    out = np.empty(cap, dtype=np.uint32)
    count = lib.ecf_rans_encode(ops.address(start), ops.address(freq), len(start), ops.address(out), cap, x0)
    if count < 0:
        raise RuntimeError("rANS output buffer too small")
    return out[cap - count:].copy()


def band_offsets(H: int, per_row: int, S: int) -> np.ndarray:
    """Element offsets of S bands of latent rows in a group flattened as (H, W2, p)."""
    return np.array([(s * H // S) * per_row for s in range(S + 1)], dtype=np.int64)


def substream_count(H: int) -> int:
    """Bands (substreams) per image of H latent rows."""
    return max(1, min(MAX_BANDS, H // ROWS_PER_BAND))


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varints(data: bytes, count: int) -> tuple[list[int], int]:
    """count LEB128 values from the start of data -> (values, bytes used)."""
    values, pos = [], 0
    for _ in range(count):
        value = 0
        for shift in range(0, 7 * _MAX_VARINT_BYTES, 7):
            if pos >= len(data):
                raise BitstreamError("truncated y payload: substream table cut off")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
        else:
            raise BitstreamError("corrupted y payload: substream length too long")
        values.append(value)
    return values, pos


def pack(substreams: list[np.ndarray], version: int = FORMATS[-1]) -> bytes:
    body = b"".join(s.astype("<u4").tobytes() for s in substreams)
    if version == 3:
        return np.array([len(substreams)] + [len(s) for s in substreams], dtype="<u4").tobytes() + body
    return b"".join(_varint(len(s)) for s in substreams[:-1]) + body


def unpack(data: bytes, expected: int, version: int = FORMATS[-1]) -> tuple[np.ndarray, np.ndarray]:
    """Payload -> (words, substream word offsets (S+1,)); checks the layout before any
    allocation from it. expected: the substream count S the decoder's layout needs."""
    S = expected
    if version == 3:
        head = np.frombuffer(data[:4 * min(1 + S, len(data) // 4)], dtype="<u4")
        if len(head) < 1:
            raise BitstreamError("truncated y payload: no substream table")
        if int(head[0]) != S:
            raise BitstreamError(f"corrupted y payload: {int(head[0])} substreams, the image size implies {S}")
        if len(head) < 1 + S:
            raise BitstreamError("truncated y payload: substream table cut off")
        lengths, table = [int(n) for n in head[1:]], 4 * (1 + S)
    else:
        lengths, table = _read_varints(data, S - 1)
    if (len(data) - table) % 4:
        raise BitstreamError("corrupted y payload: substreams are not whole 32-bit words")
    words = np.frombuffer(data, dtype="<u4", offset=table).astype(np.uint32)      # a copy: aligned
    if version == 4:
        lengths.append(len(words) - sum(lengths))
    if sum(lengths) != len(words) or min(lengths) < 0:
        raise BitstreamError("corrupted y payload: substream lengths do not add up to the payload size")
    return words, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


class SubstreamEncoder:
    """Collects the symbols of every group band by band; finish() gives the payload."""

    def __init__(self, S: int, version: int = FORMATS[-1]):
        initial_state(version)                                  # checks the version
        self.version = version
        self.parts: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(S)]

    def add(self, s: int, q, values: torch.Tensor) -> float:
        """Append the symbols of values under parameters q to substream s; returns their
        ideal code length in bits."""
        start, freq = symbols(q, values)
        self.parts[s].append((start, freq))
        return float((PREC - np.log2(freq.astype(np.float64))).sum())

    def finish(self) -> bytes:
        streams = []
        for part in self.parts:
            start = np.concatenate([p[0] for p in part]) if part else np.zeros(0, np.uint32)
            freq = np.concatenate([p[1] for p in part]) if part else np.zeros(0, np.uint32)
            streams.append(rans_encode(start, freq, self.version))
        return pack(streams, self.version)


class SubstreamDecoder:
    """Decodes groups from a payload, each group's bands in parallel (C) or in turn (reference)."""

    def __init__(self, data: bytes, S: int, version: int = FORMATS[-1]):
        self.x_end = initial_state(version)
        self.words, self.offsets = unpack(data, S, version)
        self.S = S
        self.lib = _lib()
        self.state = np.zeros((S, 4), dtype=np.int64)           # x, pos, end, error (rans.c Decoder)
        for s in range(S):
            begin, end = int(self.offsets[s]), int(self.offsets[s + 1])
            if end - begin < 2:
                raise BitstreamError(f"corrupted y payload: substream {s} is too short")
            x = int(self.words[begin]) | int(self.words[begin + 1]) << 32
            if x >= 1 << 63:                # the encoder's state never gets there
                raise BitstreamError(f"corrupted y payload: substream {s} starts in an impossible state")
            self.state[s] = [x, begin + 2, end, 0]

    def decode_group(self, q, offsets: np.ndarray, first: int = 0) -> torch.Tensor:
        """Values (n,) of one group whose elements offsets[s] .. offsets[s+1] are in substream
        first + s."""
        lg, mu, ks = _params(q)
        n, K = lg.shape
        values = np.zeros(n, dtype=np.int64)
        bands = len(offsets) - 1
        if self.lib is not None:
            state = self.state[first:first + bands]             # a view: the C code updates self.state
            err = self.lib.ecf_rans_decode_group(ctypes.byref(_C_TABLES), ops.address(state), ops.address(self.words),
                                                 ops.address(offsets), bands, ops.address(lg), ops.address(mu), ops.address(ks), K,
                                                 ops.address(values), torch.get_num_threads())
        else:
            err = self._decode_reference(q, offsets, first, values)
        if err:
            raise BitstreamError(f"corrupted y payload: range decoder stopped ({_ERRORS.get(err, err)})")
        return torch.from_numpy(values)

    def _decode_reference(self, q, offsets, first, values) -> int:
        c, R, cum = reference_tables(q)
        c, R, cum = c.tolist(), R.tolist(), cum.tolist()
        for band in range(len(offsets) - 1):
            s = first + band
            x, pos, end, _ = (int(v) for v in self.state[s])

            def advance(start, freq):
                nonlocal x, pos
                x = freq * (x >> PREC) + (x & (TOT - 1)) - start
                if x < RANS_L and pos < end:         # else: start-up phase, or damage
                    x = (x << 32) | int(self.words[pos])
                    pos += 1

            def uniform(bits):
                v = (x & (TOT - 1)) >> (PREC - bits)
                advance(v << (PREC - bits), 1 << (PREC - bits))
                return v
            for i in range(int(offsets[band]), int(offsets[band + 1])):
                row, slot = cum[i], x & (TOT - 1)
                lo = next(j for j in range(2 * R[i] + 1) if row[j + 1] > slot)
                advance(row[lo], row[lo + 1] - row[lo])
                v = c[i] - R[i] + lo
                if lo in (0, 2 * R[i]):
                    try:
                        over = read_escape(uniform)
                    except BitstreamError:          # too long: the C decoder's error 2
                        return 2
                    v = v - over if lo == 0 else v + over
                values[i] = v
            self.state[s] = [x, pos, end, 0]
        return 0

    def check_finished(self) -> None:
        for s in range(self.S):
            x, pos, end, err = (int(v) for v in self.state[s])
            if err or x != self.x_end or pos != end:
                raise BitstreamError(f"y substream {s} does not end cleanly: corrupted stream or wrong model")
