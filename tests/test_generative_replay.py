"""Deep generative replay (study R1): image decoding, R1's GAN, replayed inputs and labels,
metrics and progress, checkpoints, and a benchmark on split digits."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from neurocl.data import load_dataset
from neurocl.data.encodings import decode, encode, standardisation_stats
from neurocl.nets.generators import GAN, VAE
from neurocl.protocol import load_protocol
from neurocl.rules.base import Batch
from neurocl.rules.generative_replay import GenerativeReplay
from neurocl.run import Runner, run_protocol

from test_replay import final_accuracy, split_digits

REPO = Path(__file__).resolve().parent.parent

# The benchmark's generators: quick, with a 1 : 1 mix (R1's protocol files use 1 : 9).
FAST_GENERATOR = {"epochs": 30, "batch_size": 64, "replayed_per_real": 1}


# ---------------------------------------------------------------------------- images
@pytest.mark.parametrize("encoding", ["flat", "rows", "pixels"])
@pytest.mark.parametrize("normalise", ["none", "tanh", "standard"])
def test_decode_inverts_encode(encoding, normalise):
    images = load_dataset("digits").train_images[:20].copy()
    stats = standardisation_stats(images) if normalise == "standard" else None
    x = encode(images, encoding, normalise, stats)
    back = decode(x, encoding, normalise, stats, image_shape=(8, 8))
    assert back.shape == (20, 8, 8)
    assert torch.allclose(back, torch.from_numpy(images), atol=1e-6)


def _linear_sizes(module):
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def test_the_gan_is_r1s_and_adapts_to_the_image_size():
    gan = GAN(784)
    assert _linear_sizes(gan.generator) == [(100, 32), (32, 64), (64, 128), (128, 784)]
    assert _linear_sizes(gan.discriminator) == [(784, 128), (128, 64), (64, 32), (32, 1)]
    for net in (gan.generator, gan.discriminator):
        leaky = [m for m in net.modules() if isinstance(m, nn.LeakyReLU)]
        dropout = [m for m in net.modules() if isinstance(m, nn.Dropout)]
        assert len(leaky) == len(dropout) == 3
        assert all(m.negative_slope == 0.2 for m in leaky) and all(m.p == 0.3 for m in dropout)
    assert isinstance(list(gan.generator.modules())[-1], nn.Tanh)
    assert isinstance(list(gan.discriminator.modules())[-1], nn.Sigmoid)
    small = GAN(64)
    assert _linear_sizes(small.generator)[-1] == (128, 64) and _linear_sizes(small.discriminator)[0] == (64, 128)


@pytest.mark.parametrize("make", [lambda: GAN(64), lambda: VAE(64)])
def test_generated_images_lie_in_the_unit_interval_and_training_steps_report_losses(make):
    gen = make()
    images = torch.from_numpy(load_dataset("digits").train_images[:64].reshape(64, 64).copy())
    losses = gen.fit_batch(images)
    assert losses and all(np.isfinite(v) for v in losses.values())
    sample = gen.sample(32, torch.Generator().manual_seed(0))
    assert sample.shape == (32, 64) and sample.min() >= 0 and sample.max() <= 1


# ---------------------------------------------------------------------------- a run with an E/I network
@pytest.fixture(scope="module")
def ei_run(tmp_path_factory):
    """Two split-digits tasks on the E/I network (rows: 8 steps of 8 pixels), GAN replay."""
    proto = load_protocol(REPO / "protocols" / "split-digits.yaml", [
        "tasks=[{classes: [0, 1]}, {classes: [2, 3]}]", "training.epochs=1",
        "rules=[{name: generative-replay, generator: gan, epochs: 3, replayed_per_real: 2, train_last_generator: true}]",
        "execution.progress=log", "execution.keep_checkpoints=all",
    ])
    runner = Runner(proto, tmp_path_factory.mktemp("dgr"))
    runner.rd.path.mkdir(parents=True)
    runner.execute()
    return runner


def test_replayed_inputs_are_encoded_like_real_ones_and_labelled_by_the_previous_solver(ei_run):
    rule, ctx = ei_run.rules[0], ei_run.ctx
    x, y, task, soft = rule.replay(200, ctx)
    real = ei_run.tasks[0].train.x
    assert x.shape[1:] == real.shape[1:] == (8, 8)  # rows: 8 steps of 8 pixels
    assert x.min() >= 0 and x.max() <= 1  # images in [0, 1]: valid (non-negative) E/I inputs
    assert soft is None and torch.all(task <= 1)
    # Class-incremental: labels are the previous solver's argmax over the classes seen before.
    with torch.no_grad():
        z = rule.previous_solver(x, noise=False)[:, -1]
    seen = torch.tensor([0, 1, 2, 3])
    assert torch.equal(y, seen[z[:, seen].argmax(-1)])
    # The previous solver is the model frozen at the end of the last trained task.
    assert all(not p.requires_grad for p in rule.previous_solver.parameters())
    checkpoint = torch.load(ei_run.rd.checkpoint(1), weights_only=True)
    for name, value in rule.previous_solver.state_dict().items():
        assert torch.equal(value, checkpoint["model"][name])


def test_generator_losses_are_in_the_metrics_and_progress_is_shown(ei_run, capfd):
    metrics = pd.read_parquet(ei_run.rd.metrics)
    for name in ("gen_loss_d", "gen_loss_g"):
        rows = metrics[metrics.metric == name]
        assert sorted(zip(rows.task, rows.epoch)) == [(t, e) for t in (0, 1) for e in range(3)]
        assert np.all(np.isfinite(rows.value))
    # Progress: log lines on a terminal-less stderr (progress: log), a tqdm bar on a terminal.
    capfd.readouterr()
    ei_run.rules[0].train_generator(0, ei_run.ctx)
    err = capfd.readouterr().err
    assert "[generator task 0 3/3] loss_d " in err and " loss_g " in err


def _variant(rule, ctx, **changes):
    """The run's rule with other options and the same scholar."""
    other = GenerativeReplay(rule.config.model_copy(update=changes))
    other.setup(ctx)
    other.load_state_dict(rule.state_dict())
    return other


def test_the_solver_trains_on_one_mixed_set_by_default(ei_run):
    rule, ctx = ei_run.rules[0], ei_run.ctx
    (own, real), *replayed = rule.task_data(1, ctx)
    assert own == 1 and real is ei_run.tasks[1].train
    n_replayed = sum(len(split) for _, split in replayed)
    assert n_replayed == 2 * len(real)  # replayed_per_real: 2
    assert {j for j, _ in replayed} <= {0, 1}
    for _, split in replayed:
        assert split.x.shape[1:] == real.x.shape[1:] and set(split.y.tolist()) <= {0, 1, 2, 3}
    # Rows weigh the same (r = the fraction of real rows) unless real_weight is set.
    batch = Batch(x=torch.rand(6, 8, 8), y=torch.zeros(6, dtype=torch.long), task=torch.tensor([1, 1, 0, 0, 0, 0]))
    ctx.task_index = 1
    assert rule.mix_batch(batch, ctx) is batch
    w = _variant(rule, ctx, real_weight=0.7).mix_batch(batch, ctx).weights()
    assert w[:2].sum().item() == pytest.approx(0.7) and w[2:].sum().item() == pytest.approx(0.3)
    w = _variant(rule, ctx, real_weight="tasks").mix_batch(batch, ctx).weights()
    assert w[:2].sum().item() == pytest.approx(1 / 2)  # task 1: every task seen counts the same


def test_batch_mixing_appends_fresh_replay_at_the_set_ratio(ei_run):
    rule, ctx = ei_run.rules[0], ei_run.ctx
    real = ei_run.tasks[1].train.subset(slice(0, 10))
    batch = Batch(x=real.x, y=real.y, task=torch.ones(10, dtype=torch.long))
    mixed = _variant(rule, ctx, solver_mix="batch").mix_batch(batch, ctx)
    assert len(mixed) == 10 + 20  # replayed_per_real: 2
    w = mixed.weights()
    assert w[:10].sum().item() == pytest.approx(1 / 3) and w[10:].sum().item() == pytest.approx(2 / 3)
    soft = _variant(rule, ctx, solver_mix="batch", targets="soft", temperature=2.0, real_weight=0.4)
    mixed = soft.mix_batch(batch, ctx)
    assert mixed.weights()[:10].sum().item() == pytest.approx(0.4)
    assert not mixed.soft_valid[:10].any() and mixed.soft_valid[10:].all()
    assert torch.allclose(mixed.soft[10:].sum(-1), torch.ones(20))
    assert torch.all(mixed.soft[10:, 4:] == 0)  # no probability on classes not seen yet


def test_generator_training_length_can_be_set_in_updates(ei_run, monkeypatch):
    rule = _variant(ei_run.rules[0], ei_run.ctx, steps=7)
    sizes = []
    fit = GAN.fit_batch
    monkeypatch.setattr(GAN, "fit_batch", lambda self, images, generator=None: sizes.append(len(images)) or fit(self, images, generator))
    rule.train_generator(1, ei_run.ctx)
    # Seven updates of 64 images: 21 real and 43 from the previous generator (1 : 2).
    assert sizes == [64] * 7
    balanced = _variant(ei_run.rules[0], ei_run.ctx, replayed_per_real="tasks")
    assert balanced.solver_ratio == 2.0  # the scholar covers two tasks: real : replayed = 1 : 2


def test_soft_targets_need_batch_mixing():
    with pytest.raises(ValueError, match="solver_mix: batch"):
        GenerativeReplay.config_class(targets="soft")


def test_the_scholar_survives_a_weights_only_checkpoint(ei_run, tmp_path):
    rule, ctx = ei_run.rules[0], ei_run.ctx
    torch.save(rule.state_dict(), tmp_path / "rule.pt")
    restored = GenerativeReplay(rule.config)
    restored.setup(ctx)
    restored.load_state_dict(torch.load(tmp_path / "rule.pt", weights_only=True))
    a = rule.scholar_generator.sample(16, torch.Generator().manual_seed(3))
    b = restored.scholar_generator.sample(16, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    x = rule.inputs_of(a)
    with torch.no_grad():
        assert torch.equal(rule.previous_solver(x, noise=False), restored.previous_solver(x, noise=False))
    assert restored.tasks_done == rule.tasks_done == 2


# ---------------------------------------------------------------------------- benchmark
@pytest.fixture(scope="module")
def naive_accuracy(tmp_path_factory):
    return final_accuracy(run_protocol(split_digits(["naive"]), out=tmp_path_factory.mktemp("naive")))


class _RealImages:
    """A perfect 'generator': draws real images of the tasks it has seen."""

    def __init__(self, images):
        self.images = images

    def sample(self, n, generator=None):
        return self.images[torch.randint(len(self.images), (n,), generator=generator)]

    def state_dict(self):
        return {}


def test_with_a_perfect_generator_the_solver_side_matches_joint_training(tmp_path, monkeypatch):
    def real_images(self, task_index, ctx):
        return _RealImages(torch.cat([self.images_of(ctx.tasks[j].train.x) for j in range(task_index + 1)]))

    monkeypatch.setattr(GenerativeReplay, "train_generator", real_images)
    dgr = final_accuracy(run_protocol(split_digits([{"name": "generative-replay"}]), out=tmp_path))
    # Measured at seed 0: 0.96 (joint training: 0.95): labelling by the previous solver, the
    # 1 : 9 mixed set and the task ids lose nothing; what is lost in practice is the generator's.
    assert dgr > 0.9


def test_generative_replay_with_a_vae_beats_naive_fine_tuning(tmp_path, naive_accuracy):
    rule = {"name": "generative-replay", "generator": "vae", "lr": 3e-3, **FAST_GENERATOR, "epochs": 20}
    dgr = final_accuracy(run_protocol(split_digits([rule]), out=tmp_path))
    # Measured at seed 0: naive 0.19, replay from a VAE 0.60 (seeds 1, 2: 0.54, 0.66).
    assert dgr - naive_accuracy > 0.3, (naive_accuracy, dgr)


def test_generative_replay_with_r1s_gan_beats_naive_fine_tuning(tmp_path, naive_accuracy):
    rule = {"name": "generative-replay", "generator": "gan", "lr": 2e-3, **FAST_GENERATOR}
    dgr = final_accuracy(run_protocol(split_digits([rule]), out=tmp_path))
    # Measured at seed 0: naive 0.19, replay from R1's GAN 0.54 (seeds 1, 2: 0.43, 0.62).
    assert dgr - naive_accuracy > 0.2, (naive_accuracy, dgr)


# ---------------------------------------------------------------------------- despeckling
def test_despeckle_removes_isolated_pixels_and_keeps_strokes():
    from neurocl.rules.generative_replay import despeckle

    image = torch.zeros(1, 28, 28)
    image[0, 5:20, 14:16] = 0.9  # a stroke, two pixels wide
    image[0, 2, 3] = 0.8  # isolated speckle
    image[0, 25, 25] = 0.4
    image[0, 24, 10] = 0.1  # a dim background pixel with no lit neighbour
    out = despeckle(image.reshape(1, -1), (28, 28)).reshape(1, 28, 28)
    assert torch.equal(out[0, 5:20, 14:16], image[0, 5:20, 14:16])
    assert out[0, 2, 3] == 0 and out[0, 25, 25] == 0 and out[0, 24, 10] == 0


class _Speckled:
    """A 'generator' that draws one 8 x 8 stroke with one isolated bright pixel."""

    def __init__(self):
        image = torch.zeros(8, 8)
        image[1:7, 3:5] = 0.9
        image[0, 7] = 0.8
        self.image = image.reshape(1, 64)

    def sample(self, n, generator=None):
        return self.image.expand(n, -1).clone()


def test_despeckling_is_off_by_default_and_cleans_the_replayed_inputs(ei_run):
    rule, ctx = ei_run.rules[0], ei_run.ctx
    assert rule.config.despeckle is False
    clean = _variant(rule, ctx, despeckle=True)
    speckled = _Speckled()
    assert torch.equal(rule.generated(speckled, 4, None), speckled.sample(4))
    cleaned = clean.generated(speckled, 4, None)
    assert torch.all(cleaned[:, 7] == 0) and torch.equal(cleaned.reshape(4, 8, 8)[:, 1:7, 3:5], torch.full((4, 6, 2), 0.9))
    clean.scholar_generator = speckled
    x, _, _, _ = clean.replay(4, ctx)
    assert torch.equal(x, clean.inputs_of(cleaned))
