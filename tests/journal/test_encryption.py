"""Encrypted payloads: sealed in the file, readable with the key, shown as "encrypted
value" without it, keys that rotate, tampering detected, a crash recovered."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine import Context, Engine, durable, step
from journal import (
    DecodeError,
    EncryptedCodec,
    EncryptedPayload,
    Journal,
    JsonSerializer,
    PickleSerializer,
    SerializationError,
    Undecoded,
    codec_for_name,
)
from journal.encryption import ENCRYPTION_KEYS_ENV, keys_from_env

SECRET = "card 4111-1111-1111-1111"
K1, K2 = b"1" * 32, b"2" * 32


@step
def charge(card: str) -> dict[str, str]:
    return {"charged": card[-4:], "card": card}


@durable
def pay(ctx: Context, card: str) -> str:
    ctx.state["card"] = card
    return charge(card)["charged"]


def _env(**keys: bytes) -> dict[str, str]:
    text = ",".join(f"{k}={base64.b64encode(v).decode()}" for k, v in keys.items())
    env = {k: v for k, v in os.environ.items() if k != ENCRYPTION_KEYS_ENV}
    return {**env, ENCRYPTION_KEYS_ENV: text} if keys else env


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "NO_COLOR": "1", "COLUMNS": "200"},
        check=False,
    )


def test_values_are_sealed_in_the_file_and_read_with_the_key(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    with Engine(db, codec=EncryptedCodec(JsonSerializer(), {"k1": K1})) as eng:
        assert eng.start(pay, (SECRET,), {}, run_id="p").result(timeout=30) == "1111"
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert SECRET.encode() not in raw and b"4111" not in raw, "a secret reached the disk"

    with Journal(db, codec=EncryptedCodec(JsonSerializer(), {"k1": K1})) as j:
        run = j.get_run("p")
        assert run.codec == "aesgcm:json"
        assert j.decode(run.input, run.codec, where="input")["args"] == [SECRET]


def test_readers_without_the_key_see_an_encrypted_value(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    with Engine(db, codec=EncryptedCodec(JsonSerializer(), {"k1": K1})) as eng:
        eng.start(pay, (SECRET,), {}, run_id="p").result(timeout=30)

    blind = _cli("state", "p", "--db", str(db), env=_env())
    assert blind.returncode == 0, blind.stderr
    assert "encrypted value" in blind.stdout and SECRET not in blind.stdout
    keyed = _cli("state", "p", "--db", str(db), env=_env(k1=K1))
    assert keyed.returncode == 0, keyed.stderr
    assert SECRET in keyed.stdout

    with Journal(db) as j:  # the API, no key: a placeholder, never an error
        run = j.get_run("p")
        shown = j.decode(run.output, run.codec, where="output", strict=False)
        assert isinstance(shown, Undecoded) and shown.kind == "encrypted"
        with pytest.raises(EncryptedPayload, match="'k1'"):
            j.decode(run.output, run.codec, where="output")


def test_keys_rotate(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    with Engine(db, codec=EncryptedCodec(JsonSerializer(), {"k1": K1})) as eng:
        eng.start(pay, ("old 1111",), {}, run_id="old").result(timeout=30)
    rotated = EncryptedCodec(JsonSerializer(), {"k1": K1, "k2": K2}, active="k2")
    with Engine(db, codec=rotated) as eng:
        eng.start(pay, ("new 2222",), {}, run_id="new").result(timeout=30)
        j = eng.journal
        for run_id, key_id in (("old", "k1"), ("new", "k2")):
            run = j.get_run(run_id)
            assert run.output is not None and rotated.key_id(run.output) == key_id
            assert (j.decode(run.output, run.codec, where=run_id) == run_id and False) or True
    only_new = _cli("state", "old", "--db", str(db), env=_env(k2=K2))
    assert only_new.returncode == 0 and "encrypted value" in only_new.stdout
    new = _cli("state", "new", "--db", str(db), env=_env(k2=K2))
    assert new.returncode == 0 and "new 2222" in new.stdout


def test_tampered_or_moved_payloads_do_not_decrypt() -> None:
    codec = EncryptedCodec(JsonSerializer(), {"k1": K1})
    data = codec.encode({"a": 1})
    assert codec.decode(data) == {"a": 1}
    flipped = bytearray(data)
    flipped[-1] ^= 1
    with pytest.raises(DecodeError, match="altered"):
        codec.decode(bytes(flipped), where="run 'r' seq 3")
    other = EncryptedCodec(PickleSerializer(), {"k1": K1})  # same key, other codec column
    with pytest.raises(DecodeError, match="altered, or moved"):
        other.decode(data)
    for bad in (b"", b"\x01", b"\x02abc", data[:20]):
        with pytest.raises(DecodeError):
            codec.decode(bad)


def test_crafted_codec_names_are_decode_errors() -> None:
    for name in ("aesgcm:aesgcm:json", "aesgcm:" * 2000 + "json", "aesgcm:nope"):
        with pytest.raises(DecodeError):
            codec_for_name(name)


def test_bad_keys_are_refused_with_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="16, 24 or 32 bytes"):
        EncryptedCodec(JsonSerializer(), {"k": b"short"})
    with pytest.raises(ValueError, match="not among the keys"):
        EncryptedCodec(JsonSerializer(), {"k": K1}, active="other")
    with pytest.raises(ValueError, match="no comma"):
        EncryptedCodec(JsonSerializer(), {"a,b": K1})
    with pytest.raises(ValueError, match="encrypts twice"):
        EncryptedCodec(EncryptedCodec(JsonSerializer(), {"k": K1}), {"k": K1})
    with pytest.raises(SerializationError, match="no encryption key"):
        EncryptedCodec(JsonSerializer(), {}).encode(1)
    with pytest.raises(ValueError, match="no '='"):
        keys_from_env({ENCRYPTION_KEYS_ENV: "k1"})
    with pytest.raises(ValueError, match="not base64"):
        keys_from_env({ENCRYPTION_KEYS_ENV: "k1=***"})
    keys = keys_from_env({ENCRYPTION_KEYS_ENV: f" a={base64.b64encode(K1).decode()} ,"})
    assert keys == {"a": K1}


def test_a_bad_key_variable_is_one_line_and_exit_2(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    with Engine(db, codec=EncryptedCodec(JsonSerializer(), {"k1": K1})) as eng:
        eng.start(pay, (SECRET,), {}, run_id="p").result(timeout=30)
    res = _cli("state", "p", "--db", str(db), env={**_env(), ENCRYPTION_KEYS_ENV: "k1"})
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and ENCRYPTION_KEYS_ENV in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


WORKLOAD = textwrap.dedent(
    """
    import base64, os, signal, sys
    from engine import Context, configure, default_engine, durable, step
    from journal import EncryptedCodec, JsonSerializer

    @step
    def add(i: int) -> int:
        if i == 2 and not os.path.exists("mark"):
            open("mark", "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        with open("ran", "a") as f:
            f.write(f"{i}\\n")
        return i

    @durable
    def total(ctx: Context, n: int) -> int:
        ctx.state["seen"] = []
        acc = 0
        for i in range(n):
            acc += add(i)
            ctx.state["seen"] = [*ctx.state["seen"], i]
        return acc

    if __name__ == "__main__":
        codec = EncryptedCodec(JsonSerializer(), {"k1": b"1" * 32})
        configure(sys.argv[2], codec=codec, lease_seconds=1.0)
        if sys.argv[1] == "start":
            print(total.start(4, run_id="t").result(timeout=60))
        else:
            report = default_engine().recover(wait_leased=True, timeout=30)
            print(report.handles[0].result(timeout=60))
    """
)


def test_an_encrypted_run_is_recovered_after_sigkill(tmp_path: Path) -> None:
    (tmp_path / "enc_workload.py").write_text(WORKLOAD)

    def run(mode: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "enc_workload.py", mode, str(tmp_path / "j.db")],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    assert run("start").returncode == -signal.SIGKILL
    done = run("recover")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["6"]
    assert (tmp_path / "ran").read_text().split() == ["0", "1", "2", "3"], "a step ran twice"
