"""Multi-task training: S2Sched, batches, the accelerate loop, checkpoints, the `train` stage."""
