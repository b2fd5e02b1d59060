import numpy as np

METRIC_CODES: dict[str, int]
DOT: int

def csr_csr(
    metric: int,
    a_data: np.ndarray,
    a_indices: np.ndarray,
    a_indptr: np.ndarray,
    b_data: np.ndarray,
    b_indices: np.ndarray,
    b_indptr: np.ndarray,
    n_features: int,
    out: np.ndarray,
    n_threads: int,
) -> None: ...
def csr_dense(
    metric: int,
    s_data: np.ndarray,
    s_indices: np.ndarray,
    s_indptr: np.ndarray,
    D: np.ndarray,
    sparse_is_a: bool,
    out: np.ndarray,
    n_threads: int,
) -> None: ...
