import numpy as np

def packed_pairwise(
    jaccard: bool, A: np.ndarray, B: np.ndarray, K: int, out: np.ndarray, n_threads: int
) -> None: ...
