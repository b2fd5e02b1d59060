"""Private Cython kernels.  They take validated arrays and compute; the public layer in
mmfs.distance / mmfs.neighbors checks arguments.  Nothing here is re-exported."""
