"""Money as integers in minor units of an ISO 4217 currency.

Amounts typed by people ("12.50") are parsed with exact decimal digits, never through
float: "12.50" AED is 1250 fils, "12.505" AED is an error (AED has two decimals).
Every amount in a record is a positive int no larger than `MAX_AMOUNT_MINOR`.
This module must never produce or accept a float.
"""

from __future__ import annotations

import re

from ..errors import AmountError

__all__ = ["CURRENCY_DECIMALS", "MAX_AMOUNT_MINOR", "check_amount", "format_amount",
           "parse_amount"]

# ISO 4217 minor-unit exponents of the currencies a Gulf payments network meets.
CURRENCY_DECIMALS: dict[str, int] = {
    "AED": 2, "SAR": 2, "QAR": 2, "USD": 2, "EUR": 2, "GBP": 2, "INR": 2, "PKR": 2,
    "EGP": 2, "PHP": 2, "BHD": 3, "KWD": 3, "OMR": 3, "JOD": 3, "JPY": 0,
}

# 10^15 minor units: ten trillion dirhams. Anything larger is a typo or an attack.
MAX_AMOUNT_MINOR = 10**15

_AMOUNT_RE = re.compile(r"(?P<whole>[0-9]{1,16})(?:\.(?P<frac>[0-9]{1,6}))?")


def decimals(currency: str) -> int:
    try:
        return CURRENCY_DECIMALS[currency]
    except KeyError:
        raise AmountError(f"unknown currency {currency!r}") from None


def check_amount(minor: object) -> int:
    """Return `minor` if it is a valid record amount, else raise AmountError."""
    if type(minor) is not int:
        raise AmountError(f"amount must be an integer number of minor units, not {minor!r}")
    if minor <= 0:
        raise AmountError(f"amount must be positive, not {minor}")
    if minor > MAX_AMOUNT_MINOR:
        raise AmountError(f"amount {minor} is above the limit of {MAX_AMOUNT_MINOR} minor units")
    return minor


def parse_amount(text: str, currency: str) -> int:
    """Parse a decimal amount as typed by a person into minor units."""
    places = decimals(currency)
    m = _AMOUNT_RE.fullmatch(text.strip())
    if m is None:
        raise AmountError(f"{text!r} is not an amount (write it like 12.50)")
    frac = m.group("frac") or ""
    if len(frac) > places:
        raise AmountError(
            f"{text!r} has more than {places} decimal places, the most {currency} allows")
    minor = int(m.group("whole")) * 10**places + int(frac.ljust(places, "0") or "0")
    return check_amount(minor)


def format_amount(minor: int, currency: str) -> str:
    """Format minor units for people: 1250 AED -> '12.50 AED'. Negative values allowed."""
    places = decimals(currency)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**places)
    body = f"{whole}.{frac:0{places}d}" if places else str(whole)
    return f"{sign}{body} {currency}"
