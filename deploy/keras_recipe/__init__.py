"""The parts of deploy/keras_bridge.py's `train` (the project's recipe in TensorFlow): recipe.py
(config.yaml, losses, schedules, optimizers), augment.py (the paired augmentations) and
train_loop.py (strategy, sharded data, the custom training loop, validation, checkpoints).
Only errors.py is imported before the command line is parsed (no TensorFlow for --help)."""
