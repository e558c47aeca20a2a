"""The paper's CapsNet and its training, apart from the study built on it (it imports nothing of
capslib.study or capslib.cli: a contract in pyproject.toml).

    model.py       the paper in one file: squash, routing, losses, decoder, CapsNet, the baseline CNNs
    config.py      TrainConfig: every option of a run, declared once; the paper and official recipes;
                   which layer set each value
    routing.py     the routing procedures, by name (the paper's `dynamic` is model.py's)
    datasets.py    the datasets: files, checksums, classes, channels, labels per image, frame sizes
    data.py        IDX files, validation, tensors on the device, the epoch streams
    generated.py   MultiMNIST, expanded MNIST and the affNIST-style set, generated on the device
    speed.py       the speed paths (fp32 … bf16 + compile + CUDA graph) and how `auto` picks one
    step.py        one training step (eager, compiled or a CUDA graph) and its named statistics
    train.py       the training loop
    evaluate.py    test error, predictions
    checkpoint.py  a run's model: built from its config, saved and loaded
    layout.py      where a run lives: its name, its folders, the files in them
    runs.py        run folders: locks, metrics.csv and run.json, reading runs back
    gpus.py        one GPU per run: a lock per GPU (under Slurm, the GPU the scheduler gave)
    predict.py     your own images, converted the way MNIST was made
    provenance.py  where a result came from
    files.py       atomic writes; errors.py: the one error type users see
"""
