from typing import overload

import numpy as np

MISSING: int
CORRUPT: int
STALE: int
TOMBSTONE: int

class FieldPlan:
    n_fields: int
    row_bytes: int
    float_rows: bool
    n_aff: int
    def __init__(
        self,
        offsets: np.ndarray,
        sizes: np.ndarray,
        float_rows: bool = False,
        affine: tuple[np.ndarray, ...] | None = None,
    ) -> None: ...
    n_var: int
    def set_variants(self, offsets: np.ndarray, first: np.ndarray) -> None: ...

class RowTable:
    def __init__(
        self,
        keys: dict[str, np.ndarray],
        str_keys: bool,
        n_keys: int,
        n_slots: int,
        directory: np.ndarray,
        page_addrs: np.ndarray,
        n_pages: int,
        page_bits: int,
        pseg_bits: int,
        row_addrs: np.ndarray,
        n_rows: int,
        rseg_bits: int,
        record_bytes: int,
        head: np.ndarray,
        generation: int,
    ) -> None: ...
    @property
    def n_rows(self) -> int: ...
    def stale(self) -> bool: ...
    def row_of_int(self, key: int) -> int: ...
    def row_of_str(self, key: bytes) -> int: ...
    def get_int(
        self,
        keys: np.ndarray,
        rows: np.ndarray,
        plan: FieldPlan,
        out: np.ndarray,
        n_threads: int,
        at: np.ndarray | None = None,
        var: np.ndarray | None = None,
    ) -> int: ...
    def get_str(
        self,
        qbytes: np.ndarray,
        qoffsets: np.ndarray,
        rows: np.ndarray,
        plan: FieldPlan,
        out: np.ndarray,
        n_threads: int,
        at: np.ndarray | None = None,
        var: np.ndarray | None = None,
    ) -> int: ...
    def rows_of_slots(self, slots: np.ndarray) -> int: ...
    def set_history(
        self, run_addrs: np.ndarray, run_lens: np.ndarray, min_addrs: np.ndarray
    ) -> None: ...
    def asof_rows(
        self,
        slots: np.ndarray,
        times: np.ndarray,
        rows: np.ndarray,
        ttl: int = -1,
        n_threads: int = 1,
    ) -> int: ...
    def latest_rows(self, slots: np.ndarray, rows: np.ndarray) -> None: ...
    def asof_sorted(
        self,
        slots: np.ndarray,
        times: np.ndarray,
        order: np.ndarray,
        sorted_slots: np.ndarray,
        sorted_times: np.ndarray,
        rows: np.ndarray,
        ttl: int = -1,
        n_threads: int = 1,
        plan: FieldPlan | None = None,
        out: np.ndarray | None = None,
    ) -> int: ...
    def asof_one(self, slot: int, t: int, plan: FieldPlan) -> tuple[int, np.ndarray | None]: ...
    def get_one_int(self, key: int, plan: FieldPlan) -> tuple[int, np.ndarray | None]: ...
    def get_one_str(self, key: bytes, plan: FieldPlan) -> tuple[int, np.ndarray | None]: ...
    def gather_plan(
        self,
        rows: np.ndarray,
        plan: FieldPlan,
        out: np.ndarray,
        n_threads: int,
        at: np.ndarray | None = None,
    ) -> None: ...

def gather_sparse(
    starts: np.ndarray,
    counts: np.ndarray,
    idx_addrs: np.ndarray,
    val_addrs: np.ndarray,
    seg_bits: int,
    n_elems: int,
    dim: int,
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
) -> int: ...
def min_levels(rows: np.ndarray) -> np.ndarray: ...
def last_below_py(rows: np.ndarray, mins: np.ndarray, lo: int, p: int, limit: int) -> int: ...
@overload
def slot_order(
    slots: np.ndarray, n_slots: int, times: np.ndarray, n_threads: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
@overload
def slot_order(
    slots: np.ndarray, n_slots: int, times: None = None, n_threads: int = 1
) -> tuple[np.ndarray, np.ndarray, None]: ...
