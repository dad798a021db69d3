"""Training stage: the run orchestration (`run`), the accelerator and processes (`accelerator`), the loop
that is generic over methods (`loop`), optimizer and schedule (`optim`), and sweeps over recipes (`sweep`)."""
