"""The codecs: JSON round trips with types, pickle with HMAC, framing, errors."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import pickle
import uuid
import zlib
import zoneinfo
from collections import OrderedDict
from decimal import Decimal
from typing import Any, NamedTuple

import pytest
from _trials import scaled
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from journal import codecs
from journal.codecs import (
    Codec,
    JsonPickleSerializer,
    JsonSerializer,
    PickleSerializer,
    codec_for_name,
    register_type,
    registered_name,
)
from journal.errors import DecodeError, SerializationError, SignatureError

KEY = b"k" * 32


# -- fixtures and types ------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Address(BaseModel):
    street: str
    city: str
    since: dt.datetime | None = None


class User(BaseModel):
    user_name: str = Field(alias="userName")
    address: Address
    history: list[Address] = []
    token: str = Field(default="unset", exclude=True)
    created: dt.datetime
    raw: bytes = b""
    score: float = 0.0
    extra: Any = None


@dataclasses.dataclass
class Line:
    sku: str
    qty: int
    price: Decimal


@dataclasses.dataclass(frozen=True)
class Cart:
    lines: list[Line]
    tags: frozenset[str]
    owner: User | None = None
    at: dt.datetime | None = None
    total: Decimal = dataclasses.field(default=Decimal(0), init=False)


class Point(NamedTuple):
    x: int
    y: int


@dataclasses.dataclass
class Renamed:
    n: int


@pytest.fixture(autouse=True)
def _isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test do not leak into the next."""
    monkeypatch.setattr(codecs, "_BY_NAME", dict(codecs._BY_NAME))
    monkeypatch.setattr(codecs, "_NAME_OF", dict(codecs._NAME_OF))
    monkeypatch.setattr(codecs, "_RESOLVED", dict(codecs._RESOLVED))


def same(a: Any, b: Any) -> bool:
    """Equal in value AND type, recursively; NaN equals NaN, -0.0 differs from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, Decimal):
        return str(a) == str(b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, set | frozenset):
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    if isinstance(a, dict):
        if len(a) != len(b):
            return False
        for k, v in a.items():
            matches = [kb for kb in b if same(k, kb)]
            if len(matches) != 1 or not same(v, b[matches[0]]):
                return False
        return True
    if isinstance(a, dt.datetime | dt.time):
        return (
            a == b
            and a.fold == b.fold
            and a.tzinfo == b.tzinfo
            and a.replace(tzinfo=None) == b.replace(tzinfo=None)
        )
    return bool(a == b)


# -- hypothesis strategies ---------------------------------------------------------------

_ZONES = [
    dt.timezone.utc,
    dt.timezone(dt.timedelta(hours=5, minutes=30)),
    dt.timezone(dt.timedelta(hours=-8)),
    zoneinfo.ZoneInfo("Europe/Paris"),
    zoneinfo.ZoneInfo("America/New_York"),
]
_tz = st.none() | st.sampled_from(_ZONES)
_hashable = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=8)
    | st.dates()
    | st.uuids()
    | st.sampled_from(Color)
    | st.sampled_from(Level)
)
_leaves = (
    _hashable
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.binary(max_size=16)
    | st.datetimes(timezones=_tz)
    | st.times(timezones=st.none() | st.sampled_from(_ZONES[:3]))
    | st.timedeltas()
    | st.decimals(allow_nan=True, allow_infinity=True)
)
_values = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.sets(_hashable, max_size=4)
        | st.frozensets(_hashable, max_size=4)
        | st.dictionaries(st.text(max_size=6), inner, max_size=4)
        | st.dictionaries(st.integers() | st.text(max_size=4), inner, max_size=4)
        | st.dictionaries(st.sampled_from(["__t", "v", "c"]), inner, max_size=3)
    ),
    max_leaves=25,
)


# -- tests -------------------------------------------------------------------------------


class TestJsonRoundTrip:
    """JsonSerializer restores values with their types."""

    @settings(max_examples=scaled(400), deadline=None)
    @given(_values)
    def test_property_round_trip(self, value: Any) -> None:
        """Any generated nested value decodes to the same value and types."""
        codec = JsonSerializer()
        data = codec.encode(value)
        assert same(codec.decode(data), value)

    @settings(max_examples=scaled(100), deadline=None)
    @given(_values)
    def test_property_round_trip_compressed(self, value: Any) -> None:
        """Round trips hold when every payload is compressed."""
        codec = JsonSerializer(compress_above=0)
        assert same(codec.decode(codec.encode(value)), value)

    def test_plain_values_are_plain_json(self) -> None:
        """Plain JSON values are stored as readable JSON, lists as lists."""
        value = {"i": 1, "ok": True, "xs": [1, 2.5, "s", None], "nested": {"a": []}}
        data = JsonSerializer().encode(value)
        assert json.loads(data) == value
        assert data == b'{"i":1,"ok":true,"xs":[1,2.5,"s",null],"nested":{"a":[]}}'

    def test_typed_values_are_tagged(self) -> None:
        """A datetime is stored as a tagged object with its ISO form."""
        when = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
        data = JsonSerializer().encode(when)
        assert json.loads(data) == {"__t": "datetime", "v": "2024-01-01T00:00:00+00:00"}

    def test_dict_with_tag_key_round_trips(self) -> None:
        """A user dict holding the key "__t" is escaped and restored."""
        value = {"__t": "datetime", "v": "2024-01-01"}
        codec = JsonSerializer()
        assert same(codec.decode(codec.encode(value)), value)

    def test_zoneinfo_and_fold_survive(self) -> None:
        """An ambiguous wall time keeps its zone and fold."""
        ny = zoneinfo.ZoneInfo("America/New_York")
        when = dt.datetime(2024, 11, 3, 1, 30, tzinfo=ny, fold=1)
        back = JsonSerializer().decode(JsonSerializer().encode(when))
        assert back.tzinfo is ny and back.fold == 1 and back.utcoffset() == when.utcoffset()

    def test_non_finite_floats(self) -> None:
        """NaN and infinities round-trip; the stored JSON stays strict."""
        codec = JsonSerializer()
        data = codec.encode([math.nan, math.inf, -math.inf])
        assert b"NaN" not in data and b"Infinity" not in data
        assert same(codec.decode(data), [math.nan, math.inf, -math.inf])

    def test_lone_surrogate_text(self) -> None:
        """Text that is not valid UTF-8 is written as ASCII escapes and restored."""
        codec = JsonSerializer()
        data = codec.encode({"s": "a\ud800b", "t": "é"})
        data.decode("utf-8")
        assert codec.decode(data) == {"s": "a\ud800b", "t": "é"}

    def test_plain_edge_values_round_trip(self) -> None:
        """Plain trees the fast serializer refuses or formats its own way read back the same."""
        codec = JsonSerializer(compress_above=None)
        nested: Any = 1
        for _ in range(400):  # deeper than pydantic-core's limit, within Python's
            nested = {"x": [nested]}
        for value in (
            [1.2e-05, 1e16, 5e-324, -0.0, 1e300, 123456789.12345679],
            [10**4298, -(10**4298), 2**64],
            {"c": "\x00\x1f\x7f\u2028é"},
            nested,
        ):
            back = codec.decode(codec.encode(value))
            assert back == value and json.dumps(back) == json.dumps(value)

    def test_int_too_long_to_read_back_is_refused(self) -> None:
        """An int the decoder could not parse is refused at encode, nothing written."""
        with pytest.raises(SerializationError, match="at state: Exceeds the limit"):
            JsonSerializer().encode({"n": [10**4400]}, path="state")

    def test_uuid_and_timedelta_in_sets(self) -> None:
        """UUIDs in frozensets and timedeltas in tuples keep their types."""
        codec = JsonSerializer()
        value = (frozenset({uuid.UUID(int=1)}), dt.timedelta(days=-1, microseconds=5))
        assert same(codec.decode(codec.encode(value)), value)

    def test_named_tuple_and_int_enum(self) -> None:
        """Named tuples and IntEnums keep their classes."""
        codec = JsonSerializer()
        value = [Point(1, 2), Level.HIGH, {Level.LOW: Point(0, 0)}]
        assert same(codec.decode(codec.encode(value)), value)


class TestModelsAndDataclasses:
    """Pydantic models and dataclasses round-trip by class name."""

    def _user(self) -> User:
        when = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
        return User(
            userName="ada",
            address=Address(street="1 Main", city="X", since=when),
            history=[Address(street="old", city="Y")],
            token="secret",
            created=when,
            raw=b"\xff\x00",
            score=math.inf,
            extra={"when": when, "ids": (1, 2)},
        )

    def test_model_round_trip(self) -> None:
        """Nested models, aliases, bytes and Any fields restore; excluded fields reset."""
        codec = JsonSerializer()
        user = self._user()
        data = codec.encode(user)
        stored = json.loads(data)
        assert stored["__t"] == "model" and stored["v"]["userName"] == "ada"
        assert "token" not in stored["v"]
        back = codec.decode(data)
        assert type(back) is User and type(back.address) is Address
        assert back.token == "unset"
        assert back == user.model_copy(update={"token": "unset"})
        assert same(back.extra, user.extra)

    def test_dataclass_round_trip(self) -> None:
        """Nested dataclasses (frozen, init=False fields) with models inside restore."""
        cart = Cart(
            lines=[Line("a", 2, Decimal("9.99")), Line("b", 1, Decimal("0.10"))],
            tags=frozenset({"x", "y"}),
            owner=self._user(),
            at=dt.datetime(2024, 1, 2, 3, 4, 5, 6),
        )
        object.__setattr__(cart, "total", Decimal("20.08"))
        codec = JsonSerializer()
        back = codec.decode(codec.encode({"cart": cart}))["cart"]
        assert type(back) is Cart and back.total == Decimal("20.08")
        assert back.lines == cart.lines and back.tags == cart.tags and back.at == cart.at
        assert back.owner is not None and back.owner.user_name == "ada"

    def test_class_names_are_module_qualname(self) -> None:
        """Unregistered classes are stored as module:qualname."""
        assert registered_name(Line) == f"{Line.__module__}:Line"
        data = JsonSerializer().encode(Line("a", 1, Decimal(1)))
        assert json.loads(data)["c"] == f"{Line.__module__}:Line"


class TestRegistry:
    """register_type gives classes stable names and lets local classes be encoded."""

    def test_registered_name_round_trips(self) -> None:
        """A registered name is what is stored, and it decodes back to the class."""
        register_type(Renamed, "Renamed.v1")
        assert registered_name(Renamed) == "Renamed.v1"
        codec = JsonSerializer()
        data = codec.encode(Renamed(3))
        assert json.loads(data)["c"] == "Renamed.v1"
        assert codec.decode(data) == Renamed(3)

    def test_renamed_class_reads_old_name(self) -> None:
        """A payload naming a moved class decodes once the new class takes the old name."""
        old = b'{"__t":"dataclass","c":"gone.module:Old","v":{"n":7}}'
        with pytest.raises(DecodeError, match="register_type"):
            JsonSerializer().decode(old, where="run 'r' seq 3")
        register_type(Renamed, "gone.module:Old")
        assert JsonSerializer().decode(old) == Renamed(7)

    def test_decorator_forms(self) -> None:
        """@register_type, @register_type("n") and @register_type(name="n") all register."""

        @register_type
        class A(enum.Enum):
            X = 1

        @register_type("local.B")
        @dataclasses.dataclass
        class B:
            a: A

        @register_type(name="local.C")
        class C(BaseModel):
            b: int

        codec = JsonSerializer()
        value = [B(A.X), C(b=1)]
        assert codec.decode(codec.encode(value)) == value

    def test_local_class_refused_unless_registered(self) -> None:
        """A class defined in a function cannot be found on decode, so encode refuses it."""

        @dataclasses.dataclass
        class Local:
            n: int

        with pytest.raises(SerializationError, match="register_type") as info:
            JsonSerializer().encode({"x": Local(1)}, path="state")
        assert info.value.path == "state['x']"
        register_type(Local, "tests.Local")
        assert JsonSerializer().decode(JsonSerializer().encode(Local(1))) == Local(1)

    def test_unknown_name(self) -> None:
        """An unresolvable type name is a DecodeError naming it, where, and register_type."""
        data = b'{"__t":"enum","c":"nowhere.at.all:Thing","v":1}'
        with pytest.raises(DecodeError) as info:
            JsonSerializer().decode(data, where="run 'abc' seq 17")
        message = str(info.value)
        assert "nowhere.at.all:Thing" in message and "run 'abc' seq 17" in message
        assert "register_type" in message

    def test_name_conflict(self) -> None:
        """One name cannot be registered for two different classes."""
        register_type(Renamed, "Shared")
        with pytest.raises(ValueError, match="already registered"):
            register_type(Line, "Shared")

    def test_unsupported_class(self) -> None:
        """Only models, dataclasses, enums and named tuples can be registered."""
        with pytest.raises(TypeError, match="PickleSerializer"):
            register_type(OrderedDict)

    def test_name_of_wrong_kind(self) -> None:
        """A name that resolves to a class of another kind is refused."""
        data = json.dumps({"__t": "model", "c": registered_name(Line), "v": {}}).encode()
        with pytest.raises(DecodeError, match="not a pydantic model"):
            JsonSerializer().decode(data)


class TestSerializationErrors:
    """SerializationError names the key path and the type, and what to do."""

    def test_path_into_dict_and_list(self) -> None:
        """The path of the offending value is built from keys and indexes."""
        with pytest.raises(SerializationError) as info:
            JsonSerializer().encode({"a": [1, object()]}, path="state")
        assert info.value.path == "state['a'][1]"
        assert info.value.type_name == "object"
        assert "object" in str(info.value) and "state['a'][1]" in str(info.value)
        assert "PickleSerializer" in str(info.value)

    def test_path_into_dataclass_and_tuple(self) -> None:
        """Dataclass fields appear as attributes, tuple items as indexes."""
        line = Line("a", 1, (Decimal(1), object()))  # type: ignore[arg-type]
        with pytest.raises(SerializationError) as info:
            JsonSerializer().encode([line])
        assert info.value.path == "value[0].price[1]"

    def test_path_into_model_field(self) -> None:
        """A model field that cannot be encoded is named by attribute."""
        user = TestModelsAndDataclasses()._user().model_copy(update={"extra": {"f": object()}})
        with pytest.raises(SerializationError) as info:
            JsonSerializer().encode(user, path="result")
        assert info.value.path == "result.extra['f']"

    def test_lambda_and_subclass(self) -> None:
        """Code and builtin subclasses are refused with a hint."""
        with pytest.raises(SerializationError, match="code"):
            JsonSerializer().encode(lambda: 1)
        with pytest.raises(SerializationError, match="subclass of dict"):
            JsonSerializer().encode(OrderedDict(a=1))

    def test_bad_key(self) -> None:
        """An unencodable dict key is reported."""
        with pytest.raises(SerializationError, match="dict key"):
            JsonSerializer().encode({"d": {object(): 1}})

    def test_reference_cycle(self) -> None:
        """A reference cycle is reported with its path, not as a RecursionError."""
        loop: list[Any] = [1]
        loop.append({"back": loop})
        with pytest.raises(SerializationError, match="cycle") as info:
            JsonSerializer().encode({"x": loop})
        assert info.value.path == "value['x'][1]['back']"

    def test_is_a_type_error(self) -> None:
        """SerializationError is also a TypeError, like json's own."""
        with pytest.raises(TypeError):
            JsonSerializer().encode({1j})


class TestCompression:
    """Large payloads are zlib-compressed behind a 0x00 byte; small ones stay readable."""

    def test_large_value_is_compressed(self) -> None:
        """A large value is smaller than its plain encoding and round-trips."""
        value = {"rows": [{"id": i, "name": "item", "ok": True} for i in range(2000)]}
        plain = JsonSerializer(compress_above=None).encode(value)
        packed = JsonSerializer().encode(value)
        assert packed[0] == 0 and len(packed) < len(plain)
        assert zlib.decompress(packed[1:]) == plain
        assert JsonSerializer().decode(packed) == value

    def test_small_value_is_plain(self) -> None:
        """A small value is plain JSON."""
        data = JsonSerializer().encode({"i": 1})
        assert json.loads(data) == {"i": 1}

    def test_incompressible_value_stays_plain(self) -> None:
        """Compression is skipped when it would not save space."""
        data = JsonSerializer(compress_above=0).encode("x")
        assert data == b'"x"'

    def test_bad_options(self) -> None:
        """Negative thresholds and out-of-range levels are rejected."""
        with pytest.raises(ValueError):
            JsonSerializer(compress_above=-1)
        with pytest.raises(ValueError):
            PickleSerializer(compress_level=10)


class TestJsonDecodeErrors:
    """Bad JSON payloads raise DecodeError naming where they were read."""

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"\xff\xfe garbage",
            b"{not json",
            b"\x00not zlib",
            b"\x00" + zlib.compress(b"{")[:-2],
            b'{"__t":"nope","v":1}',
            b'{"__t":"datetime","v":"yesterday"}',
            b'{"__t":"bytes","v":"***"}',
            b"[" * 100_000,
        ],
    )
    def test_garbage(self, data: bytes) -> None:
        """Garbage, truncated or malformed payloads are DecodeErrors with `where`."""
        with pytest.raises(DecodeError, match=r"run 'abc' seq 17"):
            JsonSerializer().decode(data, where="run 'abc' seq 17")


class TestPickle:
    """PickleSerializer round-trips arbitrary objects; signed frames are verified first."""

    def test_arbitrary_objects(self) -> None:
        """Lambdas and instances of local classes round-trip."""

        class Local:
            def __init__(self, n: int) -> None:
                self.n = n

        codec = PickleSerializer()
        assert codec.name == "pickle"
        assert codec.decode(codec.encode(lambda x: x + 1))(1) == 2
        back = codec.decode(codec.encode({"obj": Local(5)}))
        assert back["obj"].n == 5
        assert JsonPickleSerializer is PickleSerializer

    def test_unsigned_frame_is_a_pickle(self) -> None:
        """An unsigned uncompressed payload is a plain pickle stream."""
        data = PickleSerializer().encode({"a": 1})
        assert data[0] == 0x80 and pickle.loads(data) == {"a": 1}

    def test_compression(self) -> None:
        """Large pickles are compressed and round-trip, signed or not."""
        value = list(range(5000))
        for codec in (PickleSerializer(), PickleSerializer(hmac_key=KEY)):
            data = codec.encode(value)
            assert len(data) < len(pickle.dumps(value))
            assert codec.decode(data) == value

    def test_unpicklable_names_path(self) -> None:
        """An unpicklable value is reported with its path and type."""
        import threading

        with pytest.raises(SerializationError) as info:
            PickleSerializer().encode({"a": [1, threading.Lock()]}, path="state")
        assert info.value.path == "state['a'][1]"
        assert "lock" in str(info.value).lower()

    def test_signed_round_trip(self) -> None:
        """With a key, payloads are signed and verify."""
        codec = PickleSerializer(hmac_key="secret")
        assert codec.name == "pickle-hmac"
        data = codec.encode({"x": (1, 2)})
        assert data[0] == 0x02
        assert codec.decode(data) == {"x": (1, 2)}

    @pytest.mark.parametrize("size", [10, 20_000])
    def test_any_flipped_byte_is_refused_unread(
        self, size: int, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Flipping any byte of a signed payload is a SignatureError; nothing is unpickled."""
        codec = PickleSerializer(hmac_key=KEY)
        data = codec.encode(list(range(size)))
        positions = range(len(data)) if len(data) < 400 else range(0, len(data), 7)

        def boom(*args: Any, **kwargs: Any) -> Any:
            pytest.fail("pickle.loads was called on unverified data")

        monkeypatch.setattr(codecs.pickle, "loads", boom)
        for i in positions:
            bad = bytearray(data)
            bad[i] ^= 0x01
            with pytest.raises(SignatureError, match="seq 9"):
                codec.decode(bytes(bad), where="run 'r' seq 9")
        with pytest.raises(SignatureError):
            codec.decode(data[:20], where="run 'r' seq 9")

    def test_unsigned_payload_with_key(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An unsigned payload read with a key is refused before unpickling."""
        monkeypatch.setattr(codecs.pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
        unsigned = PickleSerializer().encode({"a": 1})
        with pytest.raises(SignatureError, match="not signed"):
            PickleSerializer(hmac_key=KEY).decode(unsigned)

    def test_wrong_key(self) -> None:
        """A payload signed with another key does not verify."""
        data = PickleSerializer(hmac_key=b"one").encode(1)
        with pytest.raises(SignatureError, match="does not verify"):
            PickleSerializer(hmac_key=b"two").decode(data, where="run 'x' seq 1")

    def test_signed_payload_without_key(self) -> None:
        """A signed payload read without a key asks for the key."""
        data = PickleSerializer(hmac_key=KEY).encode(1)
        with pytest.raises(SignatureError, match="same key"):
            PickleSerializer().decode(data)

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"\x80\x05garbage",
            PickleSerializer().encode({"a": 1})[:-3],
            b"\x01" + b"not zlib",
            b"\x7fwhatever",
        ],
    )
    def test_garbage(self, data: bytes) -> None:
        """Truncated or tampered unsigned payloads are DecodeErrors, not raw exceptions."""
        with pytest.raises(DecodeError, match="seq 4"):
            PickleSerializer().decode(data, where="run 'r' seq 4")

    def test_empty_key(self) -> None:
        """An empty HMAC key is rejected."""
        with pytest.raises(ValueError):
            PickleSerializer(hmac_key="")


class TestCodecForName:
    """codec_for_name picks the reader for a stored codec column."""

    def test_known_names(self) -> None:
        """The three names map to codecs that satisfy the Codec protocol."""
        assert isinstance(codec_for_name("json"), JsonSerializer)
        assert codec_for_name("pickle").name == "pickle"
        signed = codec_for_name("pickle-hmac", hmac_key=KEY)
        assert signed.name == "pickle-hmac"
        for codec in (codec_for_name("json"), signed):
            assert isinstance(codec, Codec)

    def test_pickle_with_key_refuses_unsigned(self) -> None:
        """Reading 'pickle' rows while a key is configured refuses them."""
        unsigned = PickleSerializer().encode(1)
        with pytest.raises(SignatureError):
            codec_for_name("pickle", hmac_key=KEY).decode(unsigned)

    def test_unknown_name(self) -> None:
        """An unknown codec name is a DecodeError."""
        with pytest.raises(DecodeError, match="nope"):
            codec_for_name("nope")

    def test_signed_without_key(self) -> None:
        """'pickle-hmac' without a key says which key to supply."""
        with pytest.raises(SignatureError, match="hmac_key"):
            codec_for_name("pickle-hmac")
