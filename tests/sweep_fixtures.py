"""The tiny protocol the sweep tests vary: an MLP on 8x8 digits, two tasks, one epoch each."""

TINY_PROTOCOL = """\
name: tiny
dataset: {name: digits, max_train: 100, max_test: 50, encoding: flat}
model: {kind: mlp, n_in: 64, hidden: [16], n_out: 10}
tasks:
  - classes: [0, 1]
  - classes: [2, 3]
training: {epochs: 1}
rules: [naive]
"""
