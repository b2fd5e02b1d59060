import numpy as np

INSERT_DONE: int
INSERT_GROW_TABLE: int
INSERT_GROW_ARENA: int
INSERT_CORRUPT: int

def fmix64(key: int) -> int: ...
def xxh64(data: np.ndarray) -> int: ...
def lookup_int(
    tkeys: np.ndarray,
    tslots: np.ndarray,
    n_keys: int,
    keys: np.ndarray,
    out: np.ndarray,
    n_threads: int,
) -> int: ...
def lookup_int_one(tkeys: np.ndarray, tslots: np.ndarray, n_keys: int, key: int) -> int: ...
def insert_int(
    tkeys: np.ndarray,
    tslots: np.ndarray,
    n_keys: int,
    keys: np.ndarray,
    start: int,
    out: np.ndarray,
) -> tuple[int, int, int]: ...
def rehash_int(
    tkeys: np.ndarray, tslots: np.ndarray, nkeys: np.ndarray, nslots: np.ndarray
) -> None: ...
def verify_int(tkeys: np.ndarray, tslots: np.ndarray, n_keys: int, n_threads: int) -> int: ...
def lookup_str(
    thashes: np.ndarray,
    tslots: np.ndarray,
    key_bytes: np.ndarray,
    key_offsets: np.ndarray,
    n_keys: int,
    qbytes: np.ndarray,
    qoffsets: np.ndarray,
    out: np.ndarray,
    n_threads: int,
) -> int: ...
def lookup_str_one(
    thashes: np.ndarray,
    tslots: np.ndarray,
    key_bytes: np.ndarray,
    key_offsets: np.ndarray,
    n_keys: int,
    key: bytes,
) -> int: ...
def insert_str(
    thashes: np.ndarray,
    tslots: np.ndarray,
    key_bytes: np.ndarray,
    key_offsets: np.ndarray,
    n_keys: int,
    qbytes: np.ndarray,
    qoffsets: np.ndarray,
    start: int,
    out: np.ndarray,
) -> tuple[int, int, int]: ...
def rehash_str(
    thashes: np.ndarray, tslots: np.ndarray, nhashes: np.ndarray, nslots: np.ndarray
) -> None: ...
def verify_str(
    thashes: np.ndarray,
    tslots: np.ndarray,
    key_bytes: np.ndarray,
    key_offsets: np.ndarray,
    n_threads: int,
) -> int: ...
