"""Training SelfOcc: configs, schedule, checkpoints, the trainer and `selfocc train`."""
