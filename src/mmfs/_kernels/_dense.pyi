import numpy as np

METRIC_CODES: dict[str, int]

def tile_shape(K: int, itemsize: int) -> tuple[int, int]: ...
def pairwise_direct(
    metric: int,
    A: np.ndarray,
    B: np.ndarray,
    out: np.ndarray,
    p: float,
    W: np.ndarray,
    inva: np.ndarray,
    invb: np.ndarray,
    n_threads: int,
) -> None: ...
def row_sq_norms(X: np.ndarray, out: np.ndarray, n_threads: int) -> None: ...
def inv_norms(X: np.ndarray, out: np.ndarray, n_threads: int) -> None: ...
def fix_euclidean(
    G: np.ndarray,
    A: np.ndarray,
    B: np.ndarray,
    na: np.ndarray,
    nb: np.ndarray,
    tau: float,
    squared: bool,
    n_threads: int,
) -> int: ...
def fix_cosine(
    G: np.ndarray,
    A: np.ndarray,
    B: np.ndarray,
    inva: np.ndarray,
    invb: np.ndarray,
    tau: float,
    n_threads: int,
) -> int: ...
def stream_sum(x: np.ndarray, n_threads: int = 1) -> float: ...
def gemm_nt(
    A: np.ndarray, B: np.ndarray, C: np.ndarray, n_threads: int, portable: bool = False
) -> None: ...
