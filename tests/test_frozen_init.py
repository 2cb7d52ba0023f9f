"""`quick_init` (core/frozen.py): the row classes made for every record keep the
behaviour of the `__init__` dataclasses generate - fields, defaults, keyword-only
arguments, errors for a missing or unknown one, frozenness, equality and hashing."""

from __future__ import annotations

import dataclasses
import pickle
import types

import pytest

from p2p_ledger.core.frozen import quick_init
from p2p_ledger.core.ids import Account
from p2p_ledger.core.records import Kind, SignedRecord, parse_record
from p2p_ledger.core.results import Applied, Delivery
from p2p_ledger.core.store import (
    AdmitInfo,
    ChainState,
    Credit,
    Effects,
    HistoryEntry,
    Movement,
    StoredRecord,
    Tip,
    Totals,
    Verdict,
)

from .helpers import funded_world

QUICK = (ChainState, StoredRecord, Credit, Movement, AdmitInfo, Effects, Tip, Totals,
         HistoryEntry, Applied, Delivery)
KEY = bytes(range(32))
ACCOUNT = Account(device=KEY)


def _signed() -> SignedRecord:
    _, replica = funded_world()
    first = next(iter(replica.store.all_ids_in_order()))
    raw = replica.store.raw(first)
    assert raw is not None
    return parse_record(raw)


def _samples(cls: type) -> dict[str, object]:
    """A value for each field of `cls` by name, none of them a default, each of the
    field's type (the compiled build checks the types its classes are given)."""
    chain = ChainState(admit=KEY, balances=(("main", 7),), debited=3)
    return {
        "id": KEY, "author": KEY, "device": KEY, "prev": KEY, "raw": KEY,
        "seq": 42, "hlc": 42, "amount": 42, "delta": 42, "tier": 42, "offline_limit": 42,
        "expires": 42, "issued": 42, "redeemed": 42, "records": 42, "authors": 42,
        "max_hlc": 42, "debited": 42, "settled_debited": 42, "authority_seq": 42,
        "reason": "why", "role": "why", "idem_key": "why",
        "claimed": True, "waiting": True, "already_held": True,
        "kind": Kind.TRANSFER, "verdict": Verdict.REJECTED, "chain": chain,
        "account": ACCOUNT, "record": _signed(),
        "row": StoredRecord(id=KEY, author=KEY, seq=1, prev=None, kind=Kind.ISSUE, hlc=5,
                            verdict=Verdict.APPLIED, reason=None, chain=chain),
        "credit": Credit(id=KEY, account=ACCOUNT, amount=9),
        "movements": (Movement(account=ACCOUNT, delta=-2),),
        "admit": KEY if cls is ChainState else AdmitInfo(
            id=KEY, device=KEY, role="device", tier=1, offline_limit=None, expires=None),
        "claims": (KEY,), "equivocates_with": (KEY,), "meta": (ACCOUNT, "label", "x"),
        "covers": ((KEY, 2, KEY),), "revoke": (KEY, 4), "balances": (("main", 10),),
        "applied": (), "refused": (),
    }


def _generated(cls: type) -> type:
    """The same fields in a dataclass whose `__init__` is the generated one."""
    fields = [(f.name, f.type, dataclasses.field(default=f.default))
              if f.default is not dataclasses.MISSING else (f.name, f.type)
              for f in dataclasses.fields(cls)]
    return dataclasses.make_dataclass(cls.__name__, fields, frozen=True, slots=True,
                                      kw_only=True)


def _state(obj: object) -> tuple[object, ...]:
    return tuple(getattr(obj, f.name) for f in dataclasses.fields(obj))  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", QUICK, ids=lambda c: c.__name__)
def test_a_quick_init_builds_what_the_generated_one_builds(cls: type) -> None:
    twin = _generated(cls)
    samples = _samples(cls)
    full = {f.name: samples[f.name] for f in dataclasses.fields(cls)}
    required = {f.name: full[f.name] for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING}
    for kwargs in (full, required):
        made, expected = cls(**kwargs), twin(**kwargs)
        assert _state(made) == _state(expected)
        assert made == cls(**kwargs)
        assert hash(made) == hash(cls(**kwargs))
    made = cls(**full)
    name = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(made, name, full[name])
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        cls(**full, bogus=1)
    if required:
        missing = dict(required)
        gone = next(iter(missing))
        del missing[gone]
        with pytest.raises(TypeError, match=f"missing 1 required keyword-only argument: '{gone}'"):
            cls(**missing)
        with pytest.raises(TypeError):
            cls(*required.values())  # keyword-only, as generated
    if cls not in (Applied, Delivery):  # the others are pickled (the simulator copies stores)
        assert _state(pickle.loads(pickle.dumps(made))) == _state(made)


@pytest.mark.parametrize("cls", QUICK, ids=lambda c: c.__name__)
def test_the_row_classes_have_the_quick_init_in_the_pure_build(cls: type) -> None:
    init = cls.__dict__["__init__"]
    first = dataclasses.fields(cls)[0].name
    if type(cls.__dict__.get(first)) is types.MemberDescriptorType:  # pure: slots
        assert "_set0" in init.__code__.co_names
    else:  # compiled by mypyc: native attributes, the generated __init__ left alone
        assert "_set0" not in getattr(getattr(init, "__code__", None), "co_names", ())


def test_classes_it_cannot_serve_are_left_alone() -> None:
    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class Checked:
        n: int

        def __post_init__(self) -> None:
            if self.n < 0:
                raise ValueError("negative")

    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class Listed:
        items: list[int] = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(slots=True, kw_only=True)
    class Mutable:
        n: int

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Unslotted:
        n: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Positional:
        n: int

    for cls in (Checked, Listed, Mutable, Unslotted, Positional, Account):
        before = cls.__dict__["__init__"]
        assert quick_init(cls) is cls
        assert cls.__dict__["__init__"] is before
    with pytest.raises(ValueError, match="negative"):
        Checked(n=-1)
    assert Listed().items == []
    assert Listed().items is not Listed().items
