"""The one exception type of :mod:`neurocl.data`."""


class DataError(ValueError):
    """A dataset is missing, corrupt, or asked for something it does not have.

    Messages name the file or dataset and say what is wrong, so a researcher can
    act on them without reading this package's source.
    """
