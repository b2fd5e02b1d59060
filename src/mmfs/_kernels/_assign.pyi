import numpy as np

def murmur32_bytes(msg: bytes | np.ndarray, seed: int) -> int: ...
def murmur128_bytes(msg: bytes | np.ndarray, seed: int) -> tuple[int, int]: ...
def fnv1a32_units(units: np.ndarray) -> int: ...
def murmur32_int(
    keys: np.ndarray, salt: bytes | None, seed: int, out: np.ndarray, n_threads: int
) -> None: ...
def murmur32_utf8(
    data: np.ndarray,
    offsets: np.ndarray,
    salt: bytes | None,
    seed: int,
    out: np.ndarray,
    n_threads: int,
) -> None: ...
def murmur32_ucs4(
    chars: np.ndarray, salt: bytes | None, seed: int, out: np.ndarray, n_threads: int
) -> None: ...
def murmur128_int(
    keys: np.ndarray, salt: bytes | None, seed: int, out: np.ndarray, n_threads: int
) -> None: ...
def murmur128_utf8(
    data: np.ndarray,
    offsets: np.ndarray,
    salt: bytes | None,
    seed: int,
    out: np.ndarray,
    n_threads: int,
) -> None: ...
def murmur128_ucs4(
    chars: np.ndarray, salt: bytes | None, seed: int, out: np.ndarray, n_threads: int
) -> None: ...
def slots_int(keys: np.ndarray, salt: bytes | None, out: np.ndarray, n_threads: int) -> None: ...
def slots_utf8(
    data: np.ndarray, offsets: np.ndarray, salt: bytes | None, out: np.ndarray, n_threads: int
) -> None: ...
def slots_ucs4(chars: np.ndarray, salt: bytes | None, out: np.ndarray, n_threads: int) -> None: ...
def assign_int(
    keys: np.ndarray,
    dom_salt: bytes | None,
    dom_table: np.ndarray,
    arm_salt: bytes | None,
    arm_table: np.ndarray,
    out: np.ndarray,
    n_threads: int,
) -> None: ...
def assign_utf8(
    data: np.ndarray,
    offsets: np.ndarray,
    dom_salt: bytes | None,
    dom_table: np.ndarray,
    arm_salt: bytes | None,
    arm_table: np.ndarray,
    out: np.ndarray,
    n_threads: int,
) -> None: ...
def assign_ucs4(
    chars: np.ndarray,
    dom_salt: bytes | None,
    dom_table: np.ndarray,
    arm_salt: bytes | None,
    arm_table: np.ndarray,
    out: np.ndarray,
    n_threads: int,
) -> None: ...
def gb_bucket_int(
    keys: np.ndarray, seed_units: np.ndarray, version: int, out: np.ndarray, n_threads: int
) -> None: ...
def gb_bucket_utf8(
    data: np.ndarray,
    offsets: np.ndarray,
    seed_units: np.ndarray,
    version: int,
    out: np.ndarray,
    n_threads: int,
) -> None: ...
def gb_bucket_ucs4(
    chars: np.ndarray, seed_units: np.ndarray, version: int, out: np.ndarray, n_threads: int
) -> None: ...
def remap_codes(codes: np.ndarray, table: np.ndarray, out: np.ndarray) -> None: ...
