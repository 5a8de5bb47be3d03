"""One BLAS thread per worker process, set in the environment before numpy loads.

A worker uses one core: N workers use N cores, and results do not depend on how many threads
BLAS would otherwise pick. Limiting BLAS after numpy loaded (threadpoolctl) left OpenBLAS's idle
threads competing with the other workers (measured 3.1 ms vs 2.0 ms per two-shard step with two
workers), and a process that forks children must not hold BLAS threads. This module imports
nothing heavy, so it can run before numpy does.
"""

ONE_BLAS_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
