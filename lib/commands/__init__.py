"""The user commands' code; train.py, train_tune.py and predict.py at the top are their thin entry points."""
