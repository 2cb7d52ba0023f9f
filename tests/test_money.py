"""Money: decimal text typed by people <-> integer minor units, never through float."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2p_ledger.core.money import (
    CURRENCY_DECIMALS,
    MAX_AMOUNT_MINOR,
    check_amount,
    format_amount,
    parse_amount,
)
from p2p_ledger.errors import AmountError, LocalError


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("12.50", "AED", 1250),
        ("12.5", "AED", 1250),
        ("12", "AED", 1200),
        ("0.01", "AED", 1),
        ("007.05", "AED", 705),
        ("  12.50\n", "AED", 1250),
        ("1.234", "KWD", 1234),
        ("1.5", "KWD", 1500),
        ("0.001", "BHD", 1),
        ("100", "JPY", 100),
        ("1", "JPY", 1),
        ("10000000000000", "AED", MAX_AMOUNT_MINOR),
        ("1000000000000", "KWD", MAX_AMOUNT_MINOR),
        ("1000000000000000", "JPY", MAX_AMOUNT_MINOR),
    ],
)
def test_parse_amount_exact(text: str, currency: str, minor: int) -> None:
    got = parse_amount(text, currency)
    assert got == minor
    assert type(got) is int


@pytest.mark.parametrize(
    ("text", "currency"),
    [
        ("12.505", "AED"),  # more decimals than AED has
        ("12.500", "AED"),  # even when the extra digit is zero
        ("1.2345", "KWD"),
        ("100.5", "JPY"),
        ("100.0", "JPY"),  # JPY has no decimals at all
        ("0", "AED"),
        ("0.00", "AED"),
        ("0", "JPY"),
        ("-1", "AED"),
        ("-0.01", "AED"),
        ("+1", "AED"),
        ("nan", "AED"),
        ("NaN", "AED"),
        ("inf", "AED"),
        ("Infinity", "AED"),
        ("1e3", "AED"),
        ("1E3", "AED"),
        ("", "AED"),
        ("   ", "AED"),
        (".50", "AED"),
        ("12.", "AED"),
        ("1,000.00", "AED"),
        ("1 000", "AED"),
        ("12.50 AED", "AED"),
        ("0x10", "AED"),
        ("1_000", "AED"),
        ("\u0661\u0662", "AED"),  # Arabic-Indic digits: int() would accept them
        ("\uff11\uff12", "AED"),  # fullwidth digits
        ("10000000000000.01", "AED"),  # one fil above the limit
        ("99999999999999999", "AED"),  # 17 digits
        ("9" * 400, "AED"),  # huge: refused by the pattern, no big-int work
        ("1.0000001", "AED"),
    ],
)
def test_parse_amount_refuses(text: str, currency: str) -> None:
    with pytest.raises(AmountError):
        parse_amount(text, currency)


def test_amount_error_is_a_local_value_error() -> None:
    with pytest.raises(AmountError) as info:
        parse_amount("12.505", "AED")
    assert isinstance(info.value, LocalError)
    assert isinstance(info.value, ValueError)
    assert "2 decimal places" in str(info.value)


def test_unknown_currency_is_refused() -> None:
    with pytest.raises(AmountError, match="unknown currency"):
        parse_amount("1.00", "XXX")
    with pytest.raises(AmountError, match="unknown currency"):
        format_amount(100, "aed")


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (1250, "AED", "12.50 AED"),
        (5, "AED", "0.05 AED"),
        (0, "AED", "0.00 AED"),
        (100, "AED", "1.00 AED"),
        (-1250, "AED", "-12.50 AED"),
        (-5, "AED", "-0.05 AED"),
        (1234, "KWD", "1.234 KWD"),
        (1, "KWD", "0.001 KWD"),
        (-1, "OMR", "-0.001 OMR"),
        (100, "JPY", "100 JPY"),
        (0, "JPY", "0 JPY"),
        (-7, "JPY", "-7 JPY"),
        (MAX_AMOUNT_MINOR, "AED", "10000000000000.00 AED"),
    ],
)
def test_format_amount(minor: int, currency: str, text: str) -> None:
    assert format_amount(minor, currency) == text


@given(minor=st.integers(min_value=1, max_value=MAX_AMOUNT_MINOR),
       currency=st.sampled_from(sorted(CURRENCY_DECIMALS)))
def test_format_then_parse_round_trips(minor: int, currency: str) -> None:
    text = format_amount(minor, currency)
    number, _, cur = text.partition(" ")
    assert cur == currency
    assert parse_amount(number, currency) == minor
    assert format_amount(-minor, currency) == "-" + text


@pytest.mark.parametrize("value", [1, 1250, MAX_AMOUNT_MINOR])
def test_check_amount_accepts(value: int) -> None:
    assert check_amount(value) == value


@pytest.mark.parametrize(
    "value",
    [0, -1, MAX_AMOUNT_MINOR + 1, 2**64, 12.5, 1250.0, float("nan"), True, "1250", None],
)
def test_check_amount_refuses(value: object) -> None:
    with pytest.raises(AmountError):
        check_amount(value)
