"""The analyses ``neurocl analyse KIND SOURCE`` offers: each is a click command registered under
its kind by the module that defines it (a new one is that module plus its name below)."""

from __future__ import annotations

from ..registry import Registry

ANALYSES: Registry = Registry("analysis", modules=("neurocl.analysis.psychometric", "neurocl.analysis.subspaces",
                                                     "neurocl.analysis.lesions", "neurocl.analysis.task_variance"))
