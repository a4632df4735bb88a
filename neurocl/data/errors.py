"""The one exception type of :mod:`neurocl.data`."""


class DataError(ValueError):
    """A dataset is missing, corrupt, or asked for something it does not have.

    Messages name the file or dataset and say what is wrong, so a researcher can
    act on them without reading this package's source.
    """


class DatasetNotFound(DataError):
    """A dataset's files are not in any search directory (nothing is wrong with the protocol).

    Kept apart from other :class:`DataError` so that reading a protocol or expanding a sweep
    can go on without the files (a sweep is often prepared where the data does not live) and
    only starting a run needs them.
    """
