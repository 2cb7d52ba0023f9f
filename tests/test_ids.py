"""Printable device ids (base32 with a checksum) and accounts."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2p_ledger.core.ids import (
    DEFAULT_ACCOUNT_NAME,
    Account,
    check_account_name,
    device_id,
    parse_device_id,
    short_id,
)
from p2p_ledger.errors import LocalError

from .helpers import key

KEY = bytes(key("ids/alice").verify_key)
B32 = "abcdefghijklmnopqrstuvwxyz234567"


@given(st.binary(min_size=32, max_size=32))
def test_device_id_round_trips(raw: bytes) -> None:
    text = device_id(raw)
    assert len(text) == 56
    assert text == text.lower()
    assert set(text) <= set(B32)
    assert parse_device_id(text) == raw
    assert parse_device_id(text.upper()) == raw
    assert parse_device_id(f"  {text}\n") == raw


def test_device_id_of_a_real_key_is_stable() -> None:
    text = device_id(KEY)
    assert text == device_id(KEY)
    assert base64.b32decode(text.upper())[:32] == KEY


@pytest.mark.parametrize("bad", [b"", b"x" * 31, b"x" * 33])
def test_device_id_needs_32_bytes(bad: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        device_id(bad)


@pytest.mark.parametrize("position", range(56))
def test_checksum_catches_any_one_character_typo(position: int) -> None:
    text = device_id(KEY)
    for replacement in B32:
        if replacement == text[position]:
            continue
        typo = text[:position] + replacement + text[position + 1:]
        with pytest.raises(LocalError, match="checksum"):
            parse_device_id(typo)


def test_checksum_catches_swapped_neighbours() -> None:
    text = device_id(KEY)
    swaps = 0
    for i in range(55):
        if text[i] == text[i + 1]:
            continue
        swapped = text[:i] + text[i + 1] + text[i] + text[i + 2:]
        with pytest.raises(LocalError, match="checksum"):
            parse_device_id(swapped)
        swaps += 1
    assert swaps > 40


@pytest.mark.parametrize(
    "bad",
    ["", "abc", device_id(KEY)[:-1], device_id(KEY) + "a",
     "1" + device_id(KEY)[1:],  # 1, 0, 8 and 9 are not base32
     "0" * 56, "=" * 56, device_id(KEY)[:55] + "!"],
)
def test_parse_device_id_refuses_non_ids(bad: str) -> None:
    with pytest.raises(LocalError, match="not a device id"):
        parse_device_id(bad)


def test_account_parse_without_name_is_main() -> None:
    acc = Account.parse(device_id(KEY))
    assert acc == Account(device=KEY, name=DEFAULT_ACCOUNT_NAME)
    assert acc.name == "main"
    assert str(acc) == f"{device_id(KEY)}/main"


@pytest.mark.parametrize("name", ["main", "savings", "a", "0", "fuel-2025", "till_1.b", "z" * 32])
def test_account_parse_with_name_round_trips(name: str) -> None:
    acc = Account.parse(f"{device_id(KEY)}/{name}")
    assert acc.device == KEY
    assert acc.name == name
    assert Account.parse(str(acc)) == acc
    assert Account.parse(f"{device_id(KEY).upper()}/{name}") == acc


def test_account_parse_refuses_a_typo_in_the_device() -> None:
    text = device_id(KEY)
    typo = text[:10] + ("a" if text[10] != "a" else "b") + text[11:]
    with pytest.raises(LocalError, match="checksum"):
        Account.parse(f"{typo}/main")


@pytest.mark.parametrize(
    "name",
    ["Main", "MAIN", "-x", ".x", "_x", "z" * 33, "a/b", "a b", "caf\u00e9", "main\n", "\u0661",
     "a\x00"],
)
def test_bad_account_names_are_refused(name: str) -> None:
    with pytest.raises(LocalError, match="not an account name"):
        check_account_name(name)
    with pytest.raises(LocalError):
        Account(device=KEY, name=name)
    if name == name.strip():  # Account.parse strips surrounding whitespace first
        with pytest.raises(LocalError):
            Account.parse(f"{device_id(KEY)}/{name}")


def test_account_needs_a_32_byte_device() -> None:
    with pytest.raises(LocalError, match="32 bytes"):
        Account(device=KEY[:31])


def test_accounts_are_values() -> None:
    a = Account(device=KEY, name="main")
    assert a == Account(device=KEY)
    assert hash(a) == hash(Account(device=KEY))
    assert a != Account(device=KEY, name="savings")
    assert len({a, Account(device=KEY), Account(device=KEY, name="x")}) == 2
    with pytest.raises(AttributeError):
        a.name = "other"  # type: ignore[misc]


def test_short_id_is_a_hex_prefix() -> None:
    assert short_id(KEY) == KEY.hex()[:12]
