"""Reading untrusted files: containers, pickles, checkpoints, datasets, all under limits."""
