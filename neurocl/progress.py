"""Progress over epochs of a long loop: a tqdm bar on a terminal, log lines otherwise.

The runner counts the epochs of a whole run; generative replay counts its generator's epochs
within a task, with the same convention.
"""

from __future__ import annotations

import logging
import sys


class EpochProgress:
    """``mode``: "bar", "log", "none" or "auto" (a bar when stderr is a terminal).

    ``line_label`` prefixes the log lines ("[generator task 1 3/20] ..."); ``logger`` also gets
    each update, whatever the mode.
    """

    def __init__(self, total: int, mode: str, desc: str, *, line_label: str | None = None,
                 logger: logging.Logger | None = None):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode, self.total, self.n, self.bar = mode, total, 0, None
        self.prefix = f"{line_label} " if line_label else ""
        self.logger = logger
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="epoch", leave=False)

    def update(self, message: str) -> None:
        self.n += 1
        if self.logger is not None:
            self.logger.info("%s%d/%d: %s", self.prefix, self.n, self.total, message)
        if self.bar is not None:
            self.bar.set_postfix_str(message)
            self.bar.update(1)
        elif self.mode == "log":
            print(f"[{self.prefix}{self.n}/{self.total}] {message}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
