"""The meta-training defaults the library's engine shares with the trainer's schema (training/config.py): the
paper's inner SGD, meta SGD and trajectory length K."""

INNER_OPTIMIZER = {"name": "sgd", "lr": 1e-2, "momentum": 0.9, "weight_decay": 5e-4}
META_OPTIMIZER = {"name": "sgd", "lr": 1e-2}
RESET_PERIOD = 1000
