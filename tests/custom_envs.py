"""A trial-based task written as NeuroGym's are, but not registered with NeuroGym: what a
researcher's own task looks like to neurocl (``env: custom_envs:LeftRight``)."""

from __future__ import annotations

from neurogym.core import TrialEnv
from neurogym.utils import spaces


class LeftRight(TrialEnv):
    """Fixate while a cue on channel 1 (left) or 2 (right) is shown, then report its side."""

    def __init__(self, dt: int = 100, timing: dict | None = None) -> None:
        super().__init__(dt=dt)
        self.timing = {"fixation": 200, "stimulus": 300, "decision": 200}
        if timing:
            self.timing.update(timing)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(3,), name={"fixation": 0, "left": 1, "right": 2})
        self.action_space = spaces.Discrete(3, {"fixation": 0, "choice": [1, 2]})

    def _new_trial(self, **kwargs):
        trial = {"ground_truth": int(self.rng.choice([1, 2]))}
        trial.update(kwargs)
        self.add_period(["fixation", "stimulus", "decision"])
        self.add_ob(1, ["fixation", "stimulus"], where="fixation")
        self.add_ob(1, "stimulus", where=trial["ground_truth"])
        self.set_groundtruth(0, ["fixation", "stimulus"])
        self.set_groundtruth(trial["ground_truth"], "decision")
        return trial

    def _step(self, action):
        return self.ob_now, 0.0, False, False, {"new_trial": False, "gt": self.gt_now}


class NotATask:
    pass
