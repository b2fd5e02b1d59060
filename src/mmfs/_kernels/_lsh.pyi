import numpy as np

def srp_dense(
    X: np.ndarray,
    P: np.ndarray,
    t: np.ndarray,
    out: np.ndarray,
    n_threads: int,
    sums: np.ndarray | None = None,
) -> None: ...
def srp_csr(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    P: np.ndarray,
    t: np.ndarray,
    out: np.ndarray,
    n_threads: int,
    sums: np.ndarray | None = None,
) -> None: ...
def has_avx2() -> bool: ...
def candidates(
    prefix_segs: np.ndarray,
    rest_segs: np.ndarray,
    seg_bits: int,
    n_rows: int,
    qcodes: np.ndarray,
    allow: np.ndarray,
    n1: int,
    out: np.ndarray,
    counts: np.ndarray,
    n_threads: int,
    portable: bool = False,
    weights: np.ndarray | None = None,
    table_bits: int = 0,
    table: np.ndarray | None = None,
    table_rows: int = 0,
    probes: int = 0,
    tables: int = 1,
) -> int: ...
def table_build(
    key_segs: np.ndarray,
    seg_bits: int,
    stride: int,
    n_rows: int,
    bits: int,
    out: np.ndarray,
    shift: int = 0,
) -> None: ...
def rerank(
    cand: np.ndarray,
    counts: np.ndarray,
    row_segs: np.ndarray,
    seg_bits: int,
    record_bytes: int,
    slot_offset: int,
    offset: int,
    metric: int,
    p: float,
    W: np.ndarray,
    Q: np.ndarray,
    heap_d: np.ndarray,
    heap_i: np.ndarray,
    heap_n: np.ndarray,
    n_threads: int,
) -> None: ...
