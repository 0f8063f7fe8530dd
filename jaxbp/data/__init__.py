"""Data: the data sets a run trains on, read, checked, split and standardised.

* `datasets`: `load_dataset(name, ...)`, the `Dataset` it returns and the names it knows;
* `files`: the user's npz and csv files, and new examples' features for prediction;
* `idx`: MNIST's IDX files;
* `checks`: the checks every reader shares (finite, numeric, what kind of file).
"""

from jaxbp.data.datasets import DATASETS, Dataset, load_dataset

__all__ = ("DATASETS", "Dataset", "load_dataset")
