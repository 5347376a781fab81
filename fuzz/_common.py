"""What the atheris harnesses share: the fixed clock, real keys, seeding, and crash reports.

A harness imports the modules under test inside ``atheris.instrument_imports()`` *before*
it imports this module, and this module imports nothing of Yinxin at import time: a
module imported outside the instrumented block is not instrumented, and coverage guidance
is blind inside it.

Input layout, the same in every harness: the first byte picks a mode (``data[0] % modes``),
the rest is that mode's input, read directly or through ``atheris.FuzzedDataProvider``.
Seeds are written in that layout, so each mode starts from something genuine.

When a harness finds a crash it prints, before the traceback, the exact value it handed to
the product function (``product input: verify_token(bytes, base64=...)``): that value, not
the raw fuzz input, is what a regression test in ``tests/security/test_fuzz_regressions.py``
feeds back.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import atheris

if TYPE_CHECKING:
    from hsm import KeyBackend, KeyRef, SignatureAlgorithm
    from signing import TrustStore

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python fuzz/fuzz_x.py`: sys.path[0] is fuzz/
    sys.path.insert(1, str(REPO))

# A fixed clock (DESIGN §5.5): 2026-06-01 08:00 Beijing time, as in the tests.
NOW = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)
NOW_TS = int(NOW.timestamp())
IDENTIFIER = "1.2.156.3005.2.11100000000013202H003.11110101000000456Q.20260000001.001.E"

T = TypeVar("T")

B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


class Finding(AssertionError):
    """An invariant the product promises did not hold (a crash, for libFuzzer)."""


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _show_input(call: str, value: object) -> None:
    if isinstance(value, bytes | bytearray):
        text = f"{call}(bytes, base64={base64.b64encode(bytes(value)).decode('ascii')})"
    elif isinstance(value, str):
        text = f"{call}(str, {value!r})"
    else:
        text = f"{call}({value!r})"
    sys.stderr.write(f"\nproduct input: {text}\n")
    sys.stderr.flush()


def attempt(
    call: str,
    value: object,
    function: Callable[[], T],
    allowed: tuple[type[BaseException], ...],
) -> T | None:
    """``function()``, or None when it raised one of the documented *allowed* errors.

    Anything else is printed with the product input and re-raised: libFuzzer records the
    crash.
    """
    try:
        return function()
    except allowed:
        return None
    except Exception:
        _show_input(call, value)
        raise


def finding(call: str, value: object, message: str) -> NoReturn:
    """Report a broken invariant for *value* (handed to *call*) and stop: a crash."""
    _show_input(call, value)
    raise Finding(message)


def check_reasons(call: str, value: object, codes: Sequence[str], reasons: Sequence[str], known: Any) -> None:
    """Verdict codes are known, reasons one short line each: attacker input is never echoed at length."""
    if not set(codes) <= set(known):
        finding(call, value, f"unknown verdict codes {sorted(set(codes) - set(known))}")
    for reason in reasons:
        if not isinstance(reason, str) or not reason or "\n" in reason or len(reason) > 400:
            finding(call, value, f"reason is not one short line: {reason!r:.500}")


# -- real keys ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """A software keystore in a temporary directory with one key per algorithm, and its trust store."""

    backend: KeyBackend
    refs: dict[SignatureAlgorithm, KeyRef]
    trust: TrustStore

    def sign_compact(self, algorithm: SignatureAlgorithm, header: bytes, payload: bytes) -> str:
        """header.payload.signature with the real key of *algorithm* (any bytes as header/payload)."""
        signing_input = b64(header) + "." + b64(payload)
        signature = self.backend.sign(self.refs[algorithm], signing_input.encode("ascii"))
        return signing_input + "." + b64(signature)


def make_keys(with_rsa: bool = True) -> Keys:
    """Generate the keys (RSA-3072 takes a second or two) in a keystore removed at exit."""
    from hsm import SignatureAlgorithm, SoftwareBackend
    from signing import TrustedKey, TrustStore

    directory = Path(tempfile.mkdtemp(prefix="yinxin-fuzz-keys-"))
    atexit.register(shutil.rmtree, directory, True)
    backend = SoftwareBackend(directory / "keystore", b"fuzz-harness-passphrase")
    kids = {SignatureAlgorithm.ES256: "fuzz-es256", SignatureAlgorithm.EDDSA: "fuzz-eddsa"}
    if with_rsa:
        kids[SignatureAlgorithm.PS256] = "fuzz-ps256"
    refs = {algorithm: backend.generate_key(algorithm, kid) for algorithm, kid in kids.items()}
    trust = TrustStore(TrustedKey(ref.kid, ref.algorithm, backend.public_key(ref)) for ref in refs.values())
    return Keys(backend, refs, trust)


# -- structured values ----------------------------------------------------------------------


def json_value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> Any:
    """A JSON-ish value: the awkward ones (huge ints, floats, -0, empty and nested containers)."""
    kind = fdp.ConsumeIntInRange(0, 9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 16))
    if kind == 3:
        return fdp.ConsumeRegularFloat()
    if kind in (4, 5):
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 80))
    if kind == 6:
        return fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 12))  # may hold lone surrogates
    if kind == 7:
        return [json_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    return {
        fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 12)): json_value(fdp, depth + 1)
        for _ in range(fdp.ConsumeIntInRange(0, 4))
    }


def mutate_text(fdp: atheris.FuzzedDataProvider, text: str, alphabet: str = B64URL + ".=") -> str:
    """A few edits (overwrite, insert, delete, truncate) of *text*, biased to *alphabet*."""
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        if not fdp.remaining_bytes():
            break
        op = fdp.ConsumeIntInRange(0, 4)
        at = fdp.ConsumeIntInRange(0, max(0, len(text) - 1))
        if op == 0 and text:
            text = text[:at] + fdp.PickValueInList(list(alphabet)) + text[at + 1 :]
        elif op == 1:
            text = text[:at] + fdp.ConsumeUnicode(fdp.ConsumeIntInRange(1, 8)) + text[at:]
        elif op == 2:
            text = text[:at] + text[at + fdp.ConsumeIntInRange(1, 16) :]
        elif op == 3:
            text = text[:at]
        else:
            text = text[:at] + fdp.PickValueInList(list(alphabet)) * fdp.ConsumeIntInRange(1, 64) + text[at:]
    return text


# -- running --------------------------------------------------------------------------------


def write_seeds(directory: Path, seeds: Iterable[bytes]) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    count = 0
    for seed in seeds:
        (directory / ("seed-" + hashlib.sha1(seed).hexdigest())).write_bytes(seed)  # noqa: S324 - a name
        count += 1
    return count


def main(name: str, test_one_input: Callable[[bytes], None], seeds: Callable[[], Iterable[bytes]]) -> None:
    """Seed the corpus directory (the first positional argument, or fuzz/corpus/NAME) and fuzz.

    A positional argument that is a file means "run these inputs once" (reproducing a
    crash): no seeding then.
    """
    argv = list(sys.argv)
    positional = [arg for arg in argv[1:] if not arg.startswith("-")]
    if not positional:
        corpus = REPO / "fuzz" / "corpus" / name
        argv.append(str(corpus))
        positional = [str(corpus)]
    first = Path(positional[0])
    if first.is_dir() or not first.exists():
        count = write_seeds(first, seeds())
        sys.stderr.write(f"INFO: {count} seed inputs for {name} in {first}\n")
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
