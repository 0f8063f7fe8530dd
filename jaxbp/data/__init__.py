"""Data: the data sets a run trains on, read, checked, split and standardised.

* `sources`: the one registry of data sets (`SOURCES`): each one's loader, the arguments
  it takes and needs, and the training recipe that suits it;
* `datasets`: `load_dataset(name, ...)` and the `Dataset` it returns: checked, split and
  standardised;
* `csv_file`, `npz_file`: the user's csv and npz data files;
* `files`: new examples' features (and identifiers) for prediction;
* `idx`: MNIST's IDX files;
* `targets`: what a user file's target is, class labels or values (`TASKS`);
* `checks`: the checks every reader shares (finite, numeric, what kind of file).
"""

from jaxbp.data import sources
from jaxbp.data.datasets import Dataset, load_dataset, split_record
from jaxbp.data.sources import DATASETS, SOURCES
from jaxbp.data.targets import TASKS

__all__ = ("DATASETS", "SOURCES", "TASKS", "Dataset", "load_dataset", "sources", "split_record")
