"""Plain data across the sandbox boundary: exact builtin values <-> JSON, with depth and size caps.

Stdlib only and free of rlvr imports: the parent imports it, and the sandbox gets a read-only
copy next to its harness.  Encoded: None, bool, int, float, complex, str, bytes, list, tuple,
dict, set, frozenset and collections.deque.  A subclass of one of these (a namedtuple, Counter,
IntEnum, or a `str` subclass with a lying `__eq__`) is reduced to its builtin base value through
the base type's own C-level accessors (`tuple.__iter__`, `str.__str__`, `dict.items`, ...), so
no method the program wrote runs and the lie is left behind; the type is found with `type()` and
`issubclass`, which a `__class__` property cannot fake.  Anything else raises `Unencodable`, so
no object the program made ever leaves the sandbox, and what the parent decodes is built by the
parent from builtin constructors only.

Wire form: `[tag, payload]`; ints in hex (exact, and free of the str->int digit limit), floats
as `float.hex` (exact, nan/inf included).  `MAX_ITEMS` values, `MAX_DEPTH` levels, `MAX_CHARS` of
string/bytes payload and `MAX_INT_BITS` per int bound the work on both sides.

Hash flooding: ints hash deterministically (every multiple of 2**61 - 1 hashes to 0), and so do
floats, tuples and frozensets of them, so a program can return a *list* of 10**5 distinct values
with one hash, cheap to build, that makes `set(f(x))` in the parent's tests (or the decoding of a
set or dict) quadratic: minutes of the trainer's time.  `decode` refuses a value with more than
`MAX_SAME_HASH` distinct hashable items of one hash (honest data essentially never has two), before
it builds any set or dict.
"""

from __future__ import annotations

from collections import deque

MAX_DEPTH = 64
MAX_ITEMS = 1_000_000
MAX_CHARS = 16 << 20
MAX_INT_BITS = 1 << 20
MAX_SAME_HASH = 8
_HASHED = frozenset({int, float, complex, str, bytes, tuple, frozenset})


class Unencodable(Exception):
    """The value is not plain data (or exceeds the caps)."""


_SEQ = {list: "l", tuple: "t", set: "S", frozenset: "F", deque: "q"}
_SEQ_BACK = {"l": list, "t": tuple, "S": set, "F": frozenset, "q": deque}
_BASES = (int, float, str, bytes, list, tuple, dict, set, frozenset, deque)


class _Budget:
    __slots__ = ("chars", "hashes", "items")

    def __init__(self) -> None:
        self.items, self.chars = MAX_ITEMS, MAX_CHARS
        self.hashes: dict[int, list] = {}  # hash -> its distinct values seen so far (a few at most)

    def note(self, x):
        """`x`, after counting it against the distinct values that share its hash."""
        if type(x) in _HASHED:
            try:
                same = self.hashes.setdefault(hash(x), [])
            except TypeError:  # a tuple holding a list
                return x
            if not any(x is y or x == y for y in same):
                if len(same) >= MAX_SAME_HASH:
                    raise Unencodable("too many distinct values with one hash (hash flooding)")
                same.append(x)
        return x

    def take(self, chars: int = 0) -> None:
        self.items -= 1
        self.chars -= chars
        if self.items < 0 or self.chars < 0:
            raise Unencodable("value too large")


def encode(x, _depth: int = 0, _budget: _Budget | None = None):
    """JSON-ready form of a plain value; raises Unencodable for anything else."""
    budget = _Budget() if _budget is None else _budget
    if _depth > MAX_DEPTH:
        raise Unencodable("value nested too deeply")
    t = type(x)
    if x is None:
        budget.take()
        return ["n"]
    if t is bool:
        budget.take()
        return ["b", bool(x)]
    if t is complex:
        budget.take()
        return ["c", float.hex(x.real), float.hex(x.imag)]
    base = t if t in _BASES else next((b for b in _BASES if issubclass(t, b)), None)
    if base is int:
        if int.bit_length(x) > MAX_INT_BITS:
            raise Unencodable("integer too large")
        budget.take(int.bit_length(x) // 4)
        return ["i", int.__format__(x, "x")]
    if base is float:
        budget.take()
        return ["f", float.hex(x)]
    if base is str:
        budget.take(str.__len__(x))
        return ["s", str.__str__(x)]
    if base is bytes:
        budget.take(2 * bytes.__len__(x))
        return ["y", bytes.hex(x)]
    if base in _SEQ:
        budget.take()
        return [_SEQ[base], [encode(e, _depth + 1, budget) for e in base.__iter__(x)]]
    if base is dict:
        budget.take()
        return [
            "d",
            [[encode(k, _depth + 1, budget), encode(v, _depth + 1, budget)] for k, v in dict.items(x)],
        ]
    raise Unencodable(f"not plain data: {t.__name__}")


def decode(obj, _depth: int = 0, _budget: _Budget | None = None):
    """The value for a wire form made by `encode`; raises Unencodable for anything malformed."""
    budget = _Budget() if _budget is None else _budget
    if _depth > MAX_DEPTH or type(obj) is not list or not obj or type(obj[0]) is not str:
        raise Unencodable("malformed plain data")
    tag, args = obj[0], obj[1:]
    try:
        if tag == "n" and not args:
            budget.take()
            return None
        if tag == "b" and len(args) == 1 and type(args[0]) is bool:
            budget.take()
            return args[0]
        if tag == "i" and len(args) == 1 and type(args[0]) is str and len(args[0]) <= MAX_INT_BITS // 4 + 1:
            budget.take(len(args[0]))
            return budget.note(int(args[0], 16))
        if tag == "f" and len(args) == 1 and type(args[0]) is str and len(args[0]) < 64:
            budget.take()
            return budget.note(float.fromhex(args[0]))
        if tag == "c" and len(args) == 2 and all(type(a) is str and len(a) < 64 for a in args):
            budget.take()
            return budget.note(complex(float.fromhex(args[0]), float.fromhex(args[1])))
        if tag == "s" and len(args) == 1 and type(args[0]) is str:
            budget.take(len(args[0]))
            return budget.note(args[0])
        if tag == "y" and len(args) == 1 and type(args[0]) is str:
            budget.take(len(args[0]))
            return budget.note(bytes.fromhex(args[0]))
        if tag in _SEQ_BACK and len(args) == 1 and type(args[0]) is list:
            budget.take()
            return budget.note(_SEQ_BACK[tag]([decode(e, _depth + 1, budget) for e in args[0]]))
        if tag == "d" and len(args) == 1 and type(args[0]) is list:
            budget.take()
            out = {}
            for pair in args[0]:
                if type(pair) is not list or len(pair) != 2:
                    raise Unencodable("malformed dict item")
                key, value = decode(pair[0], _depth + 1, budget), decode(pair[1], _depth + 1, budget)
                out[key] = value
            return out
    except (ValueError, TypeError, OverflowError) as exc:  # bad hex, unhashable set element or key
        raise Unencodable(f"malformed plain data: {exc}") from None
    raise Unencodable(f"malformed plain data (tag {tag!r})")
