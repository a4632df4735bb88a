"""Read-only access to what runs stored besides their metrics.

Histograms, effective-weight snapshots, recorded activity and the final checkpoint live in the
run directories, not in the results table. Figures get them through this object, which only
reads files (nothing is trained, nothing is written). When the input is a results table there
are no run directories, and every accessor raises :class:`~neurocl.figures.registry.Skip`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..store import RunDir
from .registry import Skip


@dataclass
class Network:
    """The effective weights of one E/I run, with where they were read from."""

    source: str  # e.g. "weights/t004-e002.npz" or "checkpoints/task-004.pt"
    weights: dict[str, np.ndarray]
    sign: np.ndarray  # +1 excitatory, -1 inhibitory (per unit)


class Artifacts:
    def __init__(self, run_dirs: dict[str, Path] | None = None, absent_reason: str = "no run directories"):
        self._dirs = {rid: RunDir(p) for rid, p in sorted((run_dirs or {}).items())}
        self._absent_reason = absent_reason

    @classmethod
    def none(cls, reason: str) -> "Artifacts":
        return cls({}, reason)

    def require(self) -> None:
        """Skip, with the reason, when there are no run directories at all (a results table)."""
        if not self._dirs:
            raise Skip(self._absent_reason)

    def _run(self, run_id: str) -> RunDir:
        if not self._dirs:
            raise Skip(self._absent_reason)
        return self._dirs[run_id]

    def path(self, run_id: str) -> Path:
        return self._run(run_id).path

    def config(self, run_id: str) -> dict:
        return json.loads(self._run(run_id).config.read_text())

    # ------------------------------------------------------------------ optional records
    def histograms(self, run_id: str) -> pd.DataFrame | None:
        path = self._run(run_id).histograms
        if not path.is_file():
            return None
        h = pd.read_parquet(path)
        return h.sort_values(["layer", "global_epoch", "bin_left"], kind="mergesort").reset_index(drop=True)

    def activity(self, run_id: str) -> dict[str, np.ndarray] | None:
        path = self._run(run_id).activity
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in sorted(f.files)}

    def snapshots(self, run_id: str) -> list[Path]:
        d = self._run(run_id).weights_dir
        # tTTT-eEEE.npz: the sorted names are in training order.
        return sorted(d.glob("t*-e*.npz")) if d.is_dir() else []

    def final_checkpoint(self, run_id: str) -> Path | None:
        found = self._run(run_id).last_checkpoint()
        return None if found is None else found[1]

    # ------------------------------------------------------------------ the E/I network
    def network(self, run_id: str) -> Network:
        """The last effective weights of an E/I run: its last snapshot, else its final checkpoint.

        The model is rebuilt from the stored configuration and seed so that unit signs and
        weights come through the model's own ``effective_weights()``, the one place where the
        constraints are applied; nothing is trained.
        """
        import torch

        model = self._model(run_id)
        sign = model.sign.detach().cpu().numpy().astype(float)
        snaps = self.snapshots(run_id)
        if snaps:
            with np.load(snaps[-1], allow_pickle=False) as f:
                weights = {k: f[k].astype(np.float64) for k in sorted(f.files)}
            return Network(f"weights/{snaps[-1].name}", weights, sign)
        ckpt = self.final_checkpoint(run_id)
        if ckpt is None:
            raise Skip("neither weight snapshots nor a checkpoint")
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        return Network(f"checkpoints/{ckpt.name}", _effective(model), sign)

    def initial_network(self, run_id: str) -> Network:
        """The effective weights of an E/I run before training: the model rebuilt from the
        stored configuration and seed, as the runner built it."""
        model = self._model(run_id)
        return Network("init (configuration and seed)", _effective(model), model.sign.detach().cpu().numpy().astype(float))

    def _model(self, run_id: str):
        """The run's E/I model at init; Skip for any other kind."""
        from ..models import build_model

        config = self.config(run_id)
        model_cfg = config.get("model")
        if not (isinstance(model_cfg, dict) and model_cfg.get("kind", "ei-rnn") == "ei-rnn"):
            kind = model_cfg.get("kind") if isinstance(model_cfg, dict) else model_cfg
            raise Skip(f"not an E/I network (model kind '{kind}')")
        return build_model(model_cfg, seed=config.get("seed", 0))


def _effective(model) -> dict[str, np.ndarray]:
    import torch

    with torch.no_grad():
        return {k: v.detach().cpu().double().numpy() for k, v in sorted(model.effective_weights().items())}
