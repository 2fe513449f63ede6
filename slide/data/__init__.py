"""Data layer: XC-format parsing, caching, splits, registry, fetching, synthetic stand-ins.

Public API::

    read_xc(path) -> XCDataset                      strict parse, no cache
    load_xc(path, cache=True) -> XCDataset          parse through the binary cache
    write_xc(path, ds)                              atomic XC-format writer
    read_split(path, column, num_records=None)      0-based int64 record indices
    load_split(data_path, split_path, column)       load_xc(data).subset(read_split(...))
    load_train_test(train, test, train_split=None, test_split=None, split_column=1)
    test_order(n, seed=0) / write_test_order / load_test_order
    dataset_stats(ds) -> dict
    synthesize(like, scale, seed) -> (train, test); write_synth(out_dir, like, scale, seed)
    get_dataset(name) -> DatasetSpec; list_datasets(); load_registry(path_or_dict)
    fetch(name, root="data", progress=True, limits=None) -> dict of paths
    DownloadLimits(deadline, min_rate, rate_window, read_timeout)   bounds on one download
    xxh64_file(path) -> int                         content hash the cache is keyed on
"""

from slide.data.cache import FORMAT_VERSION, load_xc, read_cache, write_cache, xxh64_file
from slide.data.dataset import XCDataset
from slide.data.fetch import DownloadLimits, dataset_paths, fetch
from slide.data.registry import DatasetSpec, get_dataset, list_datasets, load_registry
from slide.data.splits import (TEST_ORDER_FILE, TEST_ORDER_SEED, load_split, load_test_order,
                               load_train_test, read_split, test_order, write_test_order)
from slide.data.stats import dataset_stats
from slide.data.synth import synth_shape, synthesize, write_synth
from slide.data.xc_format import read_header, read_xc, write_xc

__all__ = [
    "XCDataset", "read_xc", "read_header", "write_xc", "load_xc", "read_cache", "write_cache",
    "FORMAT_VERSION", "read_split", "load_split", "load_train_test", "test_order",
    "write_test_order", "load_test_order", "TEST_ORDER_FILE", "TEST_ORDER_SEED", "dataset_stats",
    "synthesize", "synth_shape", "write_synth", "DatasetSpec", "get_dataset", "list_datasets",
    "load_registry", "fetch", "dataset_paths", "DownloadLimits", "xxh64_file",
]
