"""Malformed configuration files get a clear error, never a traceback, a hang or a written file.

The YAML loader is safe and bounded (size, depth, alias expansion), keeps merge keys and rejects
duplicate keys; a seeded fuzz over the shipped protocols checks the whole path of `validate` and
`run` on hundreds of broken variants.
"""

from __future__ import annotations

import random
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

from neurocl.cli import main
from neurocl.config import MAX_BYTES, ConfigError, load_yaml

REPO = Path(__file__).resolve().parent.parent
# Every shipped protocol, the cognitive ones (NeuroGym environments) included.
PROTOCOLS = sorted((REPO / "protocols").glob("*.yaml"))


def loaded(tmp_path: Path, text: str | bytes):
    p = tmp_path / "p.yaml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return load_yaml(p)


def error(tmp_path: Path, text: str | bytes) -> str:
    with pytest.raises(ConfigError) as err:
        loaded(tmp_path, text)
    [msg] = err.value.messages
    return msg


def test_merge_keys_work_and_explicit_keys_win(tmp_path):
    data = loaded(tmp_path, "base: &b {epochs: 2, batch_size: 16}\ntraining: {<<: *b, epochs: 5}\n").data
    assert data["training"] == {"epochs": 5, "batch_size": 16}
    data = loaded(tmp_path, "a: &a {x: 1}\nb: &b {y: 2}\nc: {<<: [*a, *b], z: 3}\n").data
    assert data["c"] == {"x": 1, "y": 2, "z": 3}


@pytest.mark.parametrize("text, expected", [
    ("name: x\nseed: 1\nname: y\n", ":3:1: key 'name' appears twice in this mapping (first on line 1); keep one"),
    ("name: !!python/object/apply:os.system [echo]\n", ":1:7: unknown tag tag:yaml.org,2002:python/object/apply:os.system"),
    ("seed: !custom 3\n", ":1:7: could not determine a constructor for the tag '!custom'"),
    ("? [a, b]\n: 1\n", ":1:3: a key must be a name or a number, not a list or a mapping"),
    ("seed: " + "[" * 200 + "]" * 200 + "\n", ":1:71: nested more than 64 levels deep"),
    ("seed: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 64 levels deep"),
    (b"name: x\nseed: \xff\n", ":2:7: not UTF-8 text (byte 0xff); save the file as UTF-8"),
    (b"name: \xc3", ":1:7: not UTF-8 text (byte 0xc3)"),  # cut inside a character
    ("name: [unclosed\n", "invalid YAML"),
])
def test_broken_files_are_clear_errors(tmp_path, text, expected):
    assert expected in error(tmp_path, text)


def test_an_alias_bomb_is_stopped_quickly(tmp_path):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    assert "expands to more than 100000 values" in error(tmp_path, "\n".join(lines) + "\n")


def test_size_and_missing_files(tmp_path):
    assert "configuration files over" in error(tmp_path, "name: x\n#" + "x" * MAX_BYTES + "\n")
    with pytest.raises(ConfigError, match="cannot read it"):
        load_yaml(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="cannot read it"):
        load_yaml(tmp_path)  # a directory


# ---------------------------------------------------------------------------- the fuzz
FRAGMENTS = [
    "<<: *nothing", "&a [*a]", "!!python/name:os.system", "? [a]\n: 1", "[" * 100 + "]" * 100, ".inf", "1e400",
    "-1", "null", "[]", "{}", "1e9", "true", "'x'", "{a: 1, a: 2}", "\t", ": :", "- - -", "*", "&", "!", "%YAML 1.1",
    "---\n---", "...", "\u00e9\u00e8", "{" * 30, "]", "0x1F", "[1, 2", "'unterminated",
]


def mutate(text: str, rng: random.Random) -> bytes:
    lines = text.split("\n")
    kind = rng.randrange(7)
    if kind == 0:  # random bytes, some not UTF-8
        raw = bytearray(text.encode())
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw)
    if kind == 1:  # cut anywhere, also inside a multi-byte character
        raw = text.encode()
        return raw[: rng.randrange(len(raw))]
    if kind == 2:
        del lines[rng.randrange(len(lines))]
    elif kind == 3:
        i = rng.randrange(len(lines))
        lines.insert(i, lines[i])  # duplicate keys, mostly
    elif kind == 4:
        i = rng.randrange(len(lines))
        lines[i] = lines[i] + " " + rng.choice(FRAGMENTS)
    elif kind == 5:  # a value replaced
        i = rng.randrange(len(lines))
        if ":" in lines[i]:
            lines[i] = lines[i].split(":", 1)[0] + ": " + rng.choice(FRAGMENTS)
    else:
        i = rng.randrange(len(lines))
        lines[i] = rng.choice(["  ", "", "\t"]) + lines[i].strip()
    return "\n".join(lines).encode()


class Hang(Exception):
    pass


def test_fuzz_no_traceback_no_hang_no_file(tmp_path):
    rng = random.Random(20261204)
    runner = CliRunner()

    def alarm(signum, frame):
        raise Hang()

    old = signal.signal(signal.SIGALRM, alarm)
    rejected = 0
    try:
        for case in range(300):
            base = rng.choice(PROTOCOLS)
            p = tmp_path / f"case{case}.yaml"
            p.write_bytes(mutate(base.read_text(), rng))
            signal.alarm(10)
            try:
                res = runner.invoke(main, ["validate", str(p)])
            except Hang:
                pytest.fail(f"case {case} ({base.name}) hung:\\n{p.read_bytes()[:500]!r}")
            finally:
                signal.alarm(0)
            assert res.exit_code in (0, 2) and (res.exception is None or isinstance(res.exception, SystemExit)), (
                f"case {case} ({base.name}): exit {res.exit_code}, {res.exception!r}\n{res.output}\n"
                f"{p.read_bytes()[:800]!r}")
            assert "Traceback" not in res.output
            if res.exit_code == 2:
                rejected += 1
                assert str(p) in res.output or "override" in res.output, res.output  # names the file
                out = tmp_path / f"store{case}"
                run = runner.invoke(main, ["run", str(p), "--out", str(out)])
                assert run.exit_code == 2 and not out.exists(), run.output
    finally:
        signal.signal(signal.SIGALRM, old)
    assert rejected > 100  # the mutations do break files
