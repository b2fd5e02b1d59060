# cython: freethreading_compatible = True
"""Deterministic experiment assignment: salted MurmurHash3, slots and GrowthBook buckets.

Design
------
An experiment assigns an entity by hashing its key: the same key, salt and seed give the
same answer in every process, on every machine and in every version, and the answer
equals what other systems compute from the same published definitions (mmh3, the
GrowthBook SDKs).  The definitions -- MurmurHash3 x86_32 / x64_128, the salt prefix, the
slot, GrowthBook's FNV-1a over UTF-16 units -- are a contract documented at the top of
mmfs_murmur.h; this module only validates arguments and runs the loops there.

Key forms.  Every operation comes in three forms, by how the keys arrive:

  _int    const int64_t[::1] keys            hashed as 8 little-endian bytes
  _utf8   const uint8_t[::1] data,           key j = data[offsets[j]:offsets[j+1]]
          const int64_t[::1] offsets         (n = len(offsets) - 1)
  _ucs4   const uint32_t[:, ::1] chars       a numpy 'U' array viewed as uint32 (n, width);
                                             a key ends at its first 0 or at width

UCS4 rows are encoded as they are hashed (UTF-8 for MurmurHash3, UTF-16 units for
GrowthBook), with no buffer and no allocation per key.

Operations.  murmur32_* and murmur128_* are the plain (salted) hashes; slots_* is
murmur32 with seed 0 reduced to a slot in [0, 10000); assign_* is the hot path: for each
key both slots (domain salt and arm salt) in one pass, then
out = arm_table[arm_slot] if dom_table[dom_slot] else -1.  gb_bucket_* is GrowthBook's
integer bucket (v2: [0, 10000), v1: [0, 1000)); the Python layer divides it by 10000 or
1000 as a float64 exactly like growthbook's gbhash.

Salt.  The prefix (uint32_le(len) || salt || zeros to a multiple of 16) is hashed once
per call here, in the wrapper; the loops start every key from that state.  salt=None
means no prefix: plain mmh3 of the key bytes.

Threads.  Above CHUNK keys the work is cut into chunks of CHUNK keys run by OpenMP
threads (prange, static schedule).  Every key's answer depends on nothing but the key,
so results are identical for every thread count.

Trust.  The wrappers check lengths, offsets (monotone, inside data) and table sizes
(ValueError); the loops never raise.  A UCS4 key with a surrogate or a code point above
0x10FFFF, or (GrowthBook only; MurmurHash3 hashes bytes as they are) a malformed UTF-8
key, is counted by the loops and the wrapper raises ValueError after the call.
"""

from cython.parallel cimport prange
from libc.stdint cimport int8_t, int16_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memset

cdef extern from "mmfs_murmur.h" nogil:
    ctypedef struct mmfs_mm32_t:
        uint32_t h
        uint64_t len
    ctypedef struct mmfs_mm128_t:
        uint64_t h1
        uint64_t h2
        uint64_t len
    int MMFS_OP_M32, MMFS_OP_M128, MMFS_OP_SLOT, MMFS_OP_ASSIGN, MMFS_OP_GB
    int MMFS_FORM_INT, MMFS_FORM_UTF8, MMFS_FORM_UCS4
    ctypedef struct mmfs_assign_job_t:
        int op
        int form
        const int64_t *keys
        const uint8_t *data
        const int64_t *offsets
        const uint32_t *chars
        int64_t width
        mmfs_mm32_t s32
        mmfs_mm32_t s32b
        mmfs_mm128_t s128
        const uint8_t *dom
        const int16_t *arm
        const uint16_t *seed
        int64_t nseed
        uint32_t seed_state
        int version
        uint32_t *out32
        uint64_t *out128
        uint16_t *out16
        int16_t *outarm
    uint32_t MMFS_FNV_BASIS
    mmfs_mm32_t mmfs_mm32_start(uint32_t seed, const uint8_t *prefix, int64_t plen)
    mmfs_mm128_t mmfs_mm128_start(uint32_t seed, const uint8_t *prefix, int64_t plen)
    uint32_t mmfs_murmur32(const uint8_t *p, int64_t length, uint32_t seed)
    void mmfs_mm128_bytes(mmfs_mm128_t s, const uint8_t *p, int64_t length, uint64_t *out)
    uint32_t mmfs_fnv_units(uint32_t h, const uint16_t *u, int64_t n)
    int64_t mmfs_assign_run(const mmfs_assign_job_t *jb, int64_t lo, int64_t hi)
    int mmfs_offsets_ok(const int64_t *off, int64_t n, int64_t nbytes)

DEF CHUNK = 4096  # keys per parallel work item
DEF N_SLOTS = 10000

# Stand-ins for the pointers of empty arrays (never read: their lengths are 0).
cdef uint8_t _empty_u8 = 0
cdef uint16_t _empty_u16 = 0
cdef uint32_t _empty_u32 = 0
cdef int64_t _empty_i64 = 0


cdef bytes _prefix(object salt):
    """The salt prefix: uint32_le(len) || salt || zeros up to a multiple of 16 bytes."""
    if salt is None:
        return b""
    if not isinstance(salt, bytes):
        raise TypeError(f"salt must be bytes or None, not {type(salt).__name__}")
    cdef Py_ssize_t length = len(<bytes>salt)
    if length > 0xFFFFFFFF:
        raise ValueError("salt longer than 2**32 - 1 bytes")
    cdef Py_ssize_t total = (4 + length + 15) // 16 * 16
    return int(length).to_bytes(4, "little") + <bytes>salt + bytes(total - 4 - length)


cdef mmfs_mm32_t _state32(object salt, uint32_t seed) except *:
    cdef bytes p = _prefix(salt)
    return mmfs_mm32_start(seed, <const uint8_t *><const char *>p, len(p))


cdef mmfs_mm128_t _state128(object salt, uint32_t seed) except *:
    cdef bytes p = _prefix(salt)
    return mmfs_mm128_start(seed, <const uint8_t *><const char *>p, len(p))


cdef int _set_int(mmfs_assign_job_t *jb, const int64_t[::1] keys) except -1:
    jb.form = MMFS_FORM_INT
    jb.keys = &keys[0] if keys.shape[0] > 0 else &_empty_i64
    return 0


cdef int _set_utf8(mmfs_assign_job_t *jb, const uint8_t[::1] data,
                   const int64_t[::1] offsets) except -1:
    cdef int ok
    cdef int64_t n
    if offsets.shape[0] < 1:
        raise ValueError("offsets needs n + 1 >= 1 entries")
    n = offsets.shape[0] - 1
    jb.form = MMFS_FORM_UTF8
    jb.data = &data[0] if data.shape[0] > 0 else &_empty_u8
    jb.offsets = &offsets[0]
    with nogil:
        ok = mmfs_offsets_ok(jb.offsets, n, data.shape[0])
    if not ok:
        raise ValueError("offsets must be non-decreasing and within [0, len(data)]")
    return 0


cdef int _set_ucs4(mmfs_assign_job_t *jb, const uint32_t[:, ::1] chars) except -1:
    jb.form = MMFS_FORM_UCS4
    jb.width = chars.shape[1]
    jb.chars = &chars[0, 0] if chars.shape[0] > 0 and chars.shape[1] > 0 else &_empty_u32
    return 0


cdef int _check_out(Py_ssize_t got, Py_ssize_t n, str what) except -1:
    if got != n:
        raise ValueError(f"{what} has {got} rows for {n} keys")
    return 0


cdef int64_t _run(mmfs_assign_job_t *jb, int64_t n, int n_threads) except -1:
    """Run the job over keys [0, n) in CHUNK-key work items; raise on bad keys."""
    cdef int64_t bad = 0, nch, c, lo
    if n > 0:
        if n_threads <= 1 or n <= CHUNK:
            with nogil:
                bad = mmfs_assign_run(jb, 0, n)
        else:
            nch = (n + CHUNK - 1) // CHUNK
            for c in prange(nch, nogil=True, schedule="static", num_threads=n_threads):
                lo = c * CHUNK
                bad += mmfs_assign_run(jb, lo, min(n, lo + CHUNK))
    if bad:
        raise ValueError(
            f"{bad} key(s) are not valid Unicode (a surrogate, a code point above "
            "0x10FFFF, or malformed UTF-8)"
        )
    return 0


# ---- arm codes -> per-arm values --------------------------------------------------------


def remap_codes(const int16_t[::1] codes, const int8_t[::1] table, int8_t[::1] out):
    """out[i] = table[codes[i] + 1]: a value per arm code (-1, not in the experiment,
    reads table[0]), e.g. the serving configuration of each key's arm.  A code outside
    [-1, len(table) - 2] raises ValueError (nothing is read out of bounds)."""
    cdef Py_ssize_t n = codes.shape[0], i, bad = 0
    cdef int m = table.shape[0]
    cdef int c
    if out.shape[0] != n:
        raise ValueError("remap_codes: one output per code")
    with nogil:
        for i in range(n):
            c = codes[i] + 1
            if c < 0 or c >= m:
                bad += 1
                c = 0
            out[i] = table[c]
    if bad:
        raise ValueError(f"remap_codes: {bad} codes outside the table of {m - 1} arms")


# ---- scalar helpers (tests, one-off keys) ------------------------------------------------


def murmur32_bytes(const uint8_t[::1] msg, uint32_t seed):
    """MurmurHash3_x86_32 of a byte buffer: mmh3.hash(msg, seed, signed=False)."""
    cdef const uint8_t *p = &msg[0] if msg.shape[0] > 0 else &_empty_u8
    return mmfs_murmur32(p, msg.shape[0], seed)


def murmur128_bytes(const uint8_t[::1] msg, uint32_t seed):
    """MurmurHash3_x64_128 of a byte buffer as (h1, h2) = mmh3.hash64(msg, seed,
    signed=False)."""
    cdef uint64_t out[2]
    cdef const uint8_t *p = &msg[0] if msg.shape[0] > 0 else &_empty_u8
    mmfs_mm128_bytes(mmfs_mm128_start(seed, p, 0), p, msg.shape[0], out)
    return out[0], out[1]


def fnv1a32_units(const uint16_t[::1] units):
    """FNV-1a 32 of UTF-16 code units: growthbook.core.fnv1a32 of the string."""
    cdef const uint16_t *p = &units[0] if units.shape[0] > 0 else &_empty_u16
    return mmfs_fnv_units(MMFS_FNV_BASIS, p, units.shape[0])


# ---- murmur32 ------------------------------------------------------------------------------


def murmur32_int(const int64_t[::1] keys, salt, uint32_t seed, uint32_t[::1] out,
                 int n_threads):
    """out[i] = MurmurHash3_x86_32(prefix(salt) || le64(keys[i]), seed)."""
    cdef mmfs_assign_job_t jb
    memset(&jb, 0, sizeof(jb))
    _check_out(out.shape[0], keys.shape[0], "out")
    jb.op = MMFS_OP_M32
    jb.s32 = _state32(salt, seed)
    _set_int(&jb, keys)
    jb.out32 = &out[0] if out.shape[0] > 0 else &_empty_u32
    _run(&jb, keys.shape[0], n_threads)


def murmur32_utf8(const uint8_t[::1] data, const int64_t[::1] offsets, salt, uint32_t seed,
                  uint32_t[::1] out, int n_threads):
    """out[j] = MurmurHash3_x86_32(prefix(salt) || data[offsets[j]:offsets[j+1]], seed)."""
    cdef mmfs_assign_job_t jb
    memset(&jb, 0, sizeof(jb))
    _set_utf8(&jb, data, offsets)
    _check_out(out.shape[0], offsets.shape[0] - 1, "out")
    jb.op = MMFS_OP_M32
    jb.s32 = _state32(salt, seed)
    jb.out32 = &out[0] if out.shape[0] > 0 else &_empty_u32
    _run(&jb, out.shape[0], n_threads)


def murmur32_ucs4(const uint32_t[:, ::1] chars, salt, uint32_t seed, uint32_t[::1] out,
                  int n_threads):
    """out[i] = MurmurHash3_x86_32(prefix(salt) || utf8(row i), seed)."""
    cdef mmfs_assign_job_t jb
    memset(&jb, 0, sizeof(jb))
    _check_out(out.shape[0], chars.shape[0], "out")
    jb.op = MMFS_OP_M32
    jb.s32 = _state32(salt, seed)
    _set_ucs4(&jb, chars)
    jb.out32 = &out[0] if out.shape[0] > 0 else &_empty_u32
    _run(&jb, chars.shape[0], n_threads)


# ---- murmur128 -----------------------------------------------------------------------------


cdef uint64_t *_out128(uint64_t[:, ::1] out, Py_ssize_t n) except NULL:
    cdef Py_ssize_t m = out.shape[0]
    if out.shape[1] != 2:
        raise ValueError(f"out must have shape (n, 2), not ({m}, {out.shape[1]})")
    _check_out(m, n, "out")
    return &out[0, 0] if m > 0 else <uint64_t *>&_empty_i64


def murmur128_int(const int64_t[::1] keys, salt, uint32_t seed, uint64_t[:, ::1] out,
                  int n_threads):
    """out[i] = (h1, h2) of MurmurHash3_x64_128(prefix(salt) || le64(keys[i]), seed)."""
    cdef mmfs_assign_job_t jb
    memset(&jb, 0, sizeof(jb))
    jb.out128 = _out128(out, keys.shape[0])
    jb.op = MMFS_OP_M128
    jb.s128 = _state128(salt, seed)
    _set_int(&jb, keys)
    _run(&jb, keys.shape[0], n_threads)


def murmur128_utf8(const uint8_t[::1] data, const int64_t[::1] offsets, salt, uint32_t seed,
                   uint64_t[:, ::1] out, int n_threads):
    """out[j] = (h1, h2) of MurmurHash3_x64_128(prefix(salt) || key j's bytes, seed)."""
    cdef mmfs_assign_job_t jb
    memset(&jb, 0, sizeof(jb))
    _set_utf8(&jb, data, offsets)
    jb.out128 = _out128(out, offsets.shape[0] - 1)
    jb.op = MMFS_OP_M128
    jb.s128 = _state128(salt, seed)
    _run(&jb, out.shape[0], n_threads)


def murmur128_ucs4(const uint32_t[:, ::1] chars, salt, uint32_t seed, uint64_t[:, ::1] out,
                   int n_threads):
    """out[i] = (h1, h2) of MurmurHash3_x64_128(prefix(salt) || utf8(row i), seed)."""
    cdef mmfs_assign_job_t jb
    memset(&jb, 0, sizeof(jb))
    jb.out128 = _out128(out, chars.shape[0])
    jb.op = MMFS_OP_M128
    jb.s128 = _state128(salt, seed)
    _set_ucs4(&jb, chars)
    _run(&jb, chars.shape[0], n_threads)


# ---- slots ---------------------------------------------------------------------------------


def slots_int(const int64_t[::1] keys, salt, uint16_t[::1] out, int n_threads):
    """out[i] = (murmur32(salt, keys[i], seed 0) * 10000) >> 32."""
    cdef mmfs_assign_job_t jb
    memset(&jb, 0, sizeof(jb))
    _check_out(out.shape[0], keys.shape[0], "out")
    jb.op = MMFS_OP_SLOT
    jb.s32 = _state32(salt, 0)
    _set_int(&jb, keys)
    jb.out16 = &out[0] if out.shape[0] > 0 else &_empty_u16
    _run(&jb, keys.shape[0], n_threads)


def slots_utf8(const uint8_t[::1] data, const int64_t[::1] offsets, salt, uint16_t[::1] out,
               int n_threads):
    """slots_int for UTF-8 keys."""
    cdef mmfs_assign_job_t jb
    memset(&jb, 0, sizeof(jb))
    _set_utf8(&jb, data, offsets)
    _check_out(out.shape[0], offsets.shape[0] - 1, "out")
    jb.op = MMFS_OP_SLOT
    jb.s32 = _state32(salt, 0)
    jb.out16 = &out[0] if out.shape[0] > 0 else &_empty_u16
    _run(&jb, out.shape[0], n_threads)


def slots_ucs4(const uint32_t[:, ::1] chars, salt, uint16_t[::1] out, int n_threads):
    """slots_int for UCS4 rows."""
    cdef mmfs_assign_job_t jb
    memset(&jb, 0, sizeof(jb))
    _check_out(out.shape[0], chars.shape[0], "out")
    jb.op = MMFS_OP_SLOT
    jb.s32 = _state32(salt, 0)
    _set_ucs4(&jb, chars)
    jb.out16 = &out[0] if out.shape[0] > 0 else &_empty_u16
    _run(&jb, chars.shape[0], n_threads)


# ---- assign --------------------------------------------------------------------------------


cdef int _set_tables(mmfs_assign_job_t *jb, object dom_salt, const uint8_t[::1] dom_table,
                     object arm_salt, const int16_t[::1] arm_table) except -1:
    if dom_table.shape[0] != N_SLOTS or arm_table.shape[0] != N_SLOTS:
        raise ValueError(
            f"dom_table and arm_table need {N_SLOTS} entries, not "
            f"{dom_table.shape[0]} and {arm_table.shape[0]}"
        )
    jb.op = MMFS_OP_ASSIGN
    jb.s32 = _state32(dom_salt, 0)
    jb.s32b = _state32(arm_salt, 0)
    jb.dom = &dom_table[0]
    jb.arm = &arm_table[0]
    return 0


def assign_int(const int64_t[::1] keys, dom_salt, const uint8_t[::1] dom_table, arm_salt,
               const int16_t[::1] arm_table, int16_t[::1] out, int n_threads):
    """out[i] = arm_table[slot(arm_salt, k)] if dom_table[slot(dom_salt, k)] else -1."""
    cdef mmfs_assign_job_t jb
    memset(&jb, 0, sizeof(jb))
    _check_out(out.shape[0], keys.shape[0], "out")
    _set_tables(&jb, dom_salt, dom_table, arm_salt, arm_table)
    _set_int(&jb, keys)
    jb.outarm = &out[0] if out.shape[0] > 0 else <int16_t *>&_empty_u16
    _run(&jb, keys.shape[0], n_threads)


def assign_utf8(const uint8_t[::1] data, const int64_t[::1] offsets, dom_salt,
                const uint8_t[::1] dom_table, arm_salt, const int16_t[::1] arm_table,
                int16_t[::1] out, int n_threads):
    """assign_int for UTF-8 keys."""
    cdef mmfs_assign_job_t jb
    memset(&jb, 0, sizeof(jb))
    _set_utf8(&jb, data, offsets)
    _check_out(out.shape[0], offsets.shape[0] - 1, "out")
    _set_tables(&jb, dom_salt, dom_table, arm_salt, arm_table)
    jb.outarm = &out[0] if out.shape[0] > 0 else <int16_t *>&_empty_u16
    _run(&jb, out.shape[0], n_threads)


def assign_ucs4(const uint32_t[:, ::1] chars, dom_salt, const uint8_t[::1] dom_table,
                arm_salt, const int16_t[::1] arm_table, int16_t[::1] out, int n_threads):
    """assign_int for UCS4 rows (-1 for a row that is not valid Unicode; then raises)."""
    cdef mmfs_assign_job_t jb
    memset(&jb, 0, sizeof(jb))
    _check_out(out.shape[0], chars.shape[0], "out")
    _set_tables(&jb, dom_salt, dom_table, arm_salt, arm_table)
    _set_ucs4(&jb, chars)
    jb.outarm = &out[0] if out.shape[0] > 0 else <int16_t *>&_empty_u16
    _run(&jb, chars.shape[0], n_threads)


# ---- GrowthBook ----------------------------------------------------------------------------


cdef int _set_gb(mmfs_assign_job_t *jb, const uint16_t[::1] seed_units, int version,
                 uint16_t[::1] out) except -1:
    if version != 1 and version != 2:
        raise ValueError(f"GrowthBook hash version must be 1 or 2, not {version}")
    jb.op = MMFS_OP_GB
    jb.version = version
    jb.nseed = seed_units.shape[0]
    jb.seed = &seed_units[0] if seed_units.shape[0] > 0 else &_empty_u16
    jb.seed_state = mmfs_fnv_units(MMFS_FNV_BASIS, jb.seed, jb.nseed)
    jb.out16 = &out[0] if out.shape[0] > 0 else &_empty_u16
    return 0


def gb_bucket_int(const int64_t[::1] keys, const uint16_t[::1] seed_units, int version,
                  uint16_t[::1] out, int n_threads):
    """GrowthBook bucket of str(key): v2 in [0, 10000) of seed + value, v1 in [0, 1000)
    of value + seed."""
    cdef mmfs_assign_job_t jb
    memset(&jb, 0, sizeof(jb))
    _check_out(out.shape[0], keys.shape[0], "out")
    _set_gb(&jb, seed_units, version, out)
    _set_int(&jb, keys)
    _run(&jb, keys.shape[0], n_threads)


def gb_bucket_utf8(const uint8_t[::1] data, const int64_t[::1] offsets,
                   const uint16_t[::1] seed_units, int version, uint16_t[::1] out,
                   int n_threads):
    """gb_bucket_int for UTF-8 keys (decoded strictly; malformed UTF-8 raises)."""
    cdef mmfs_assign_job_t jb
    memset(&jb, 0, sizeof(jb))
    _set_utf8(&jb, data, offsets)
    _check_out(out.shape[0], offsets.shape[0] - 1, "out")
    _set_gb(&jb, seed_units, version, out)
    _run(&jb, out.shape[0], n_threads)


def gb_bucket_ucs4(const uint32_t[:, ::1] chars, const uint16_t[::1] seed_units, int version,
                   uint16_t[::1] out, int n_threads):
    """gb_bucket_int for UCS4 rows."""
    cdef mmfs_assign_job_t jb
    memset(&jb, 0, sizeof(jb))
    _check_out(out.shape[0], chars.shape[0], "out")
    _set_gb(&jb, seed_units, version, out)
    _set_ucs4(&jb, chars)
    _run(&jb, chars.shape[0], n_threads)
