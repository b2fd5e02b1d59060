import numpy as np

def knn_direct(
    metric: int,
    Q: np.ndarray,
    D: np.ndarray,
    p: float,
    W: np.ndarray,
    invq: np.ndarray,
    invd: np.ndarray,
    offset: int,
    heap_d: np.ndarray,
    heap_i: np.ndarray,
    heap_n: np.ndarray,
    n_threads: int,
) -> None: ...
def knn_gemm(
    metric: int,
    Q: np.ndarray,
    D: np.ndarray,
    qn: np.ndarray,
    dn: np.ndarray,
    gamma: float,
    offset: int,
    heap_d: np.ndarray,
    heap_i: np.ndarray,
    heap_n: np.ndarray,
    n_threads: int,
) -> None: ...
def pair_distances(
    metric: int,
    Q: np.ndarray,
    D: np.ndarray,
    p: float,
    W: np.ndarray,
    invq: np.ndarray,
    invd: np.ndarray,
    qi: np.ndarray,
    di: np.ndarray,
    out: np.ndarray,
    n_threads: int,
) -> None: ...
