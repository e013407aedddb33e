"""`toolkit bench`: build the benchmark firmware, run a model on a board or under QEMU, collect timings."""
