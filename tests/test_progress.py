"""Epoch progress lines, as the runner and generative replay print them when not on a terminal."""

from __future__ import annotations

import logging

from neurocl.progress import EpochProgress


def test_log_mode_prints_one_line_per_epoch(capsys):
    p = EpochProgress(3, "log", desc="tiny")
    p.n = 1  # a resumed run: the first task's epoch is already done
    p.update("task 1 epoch 0: loss 0.5")
    p.close()
    assert capsys.readouterr().err == "[2/3] task 1 epoch 0: loss 0.5\n"


def test_labelled_lines_also_go_to_the_logger(capsys, caplog):
    log = logging.getLogger("neurocl.test_progress")
    with caplog.at_level(logging.INFO, logger=log.name):
        p = EpochProgress(2, "log", desc="generator task 1", line_label="generator task 1", logger=log)
        p.update("d_loss 0.7")
    assert capsys.readouterr().err == "[generator task 1 1/2] d_loss 0.7\n"
    assert [r.getMessage() for r in caplog.records] == ["generator task 1 1/2: d_loss 0.7"]


def test_none_prints_nothing(capsys):
    p = EpochProgress(2, "none", desc="tiny")
    p.update("x")
    assert capsys.readouterr().err == "" and p.n == 1
