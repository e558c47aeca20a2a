"""The study built on capslib.core: which runs it trains, and what it makes of them.

    studies.py     every set of runs the study trains, declared once
    sweep.py       training a set of runs: N at a time, resumable, under a time limit
    slurm.py       the same sets of runs on a Slurm cluster: one job array, requeued at time limits
    cluster.py     what a cluster user sets for it (partition, GPUs, time, ...), from flags or a TOML file
    profiles.py    run sizes by purpose: full (the study), quick (a CPU, minutes), tiny (the tests)
    paper.py       the numbers the paper reports
    summaries.py   what the logged runs say: per run, per configuration, the ablation, comparisons
    analysis.py    a trained model with its test set: reconstructions, perturbations, routing
    figures.py     drawing (figures only draw; what they show is computed in analysis and summaries)
    tables.py      tables written and shown for a reader
    notebook.py    what each notebook does first: find its clone, size a run, find or train a model
    reports.py     `make report`: HTML reports, then the executed notebooks made light
    lab.py         `make lab`: saving a notebook keeps the committed metadata
    bench.py       `capslib bench`: training speed of each path
"""
