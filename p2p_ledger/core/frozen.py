"""A quicker `__init__` for the frozen, slotted dataclasses made for every record.

A frozen dataclass's generated `__init__` sets each field with `object.__setattr__`
(its own `__setattr__` refuses), which looks the name up in the class again for every
field: about 0.2 us a field. The replica makes several such values for every record
it judges (`ChainState`, `StoredRecord`, `Effects`, `Applied`, ...), and a simulated
world of 100 replicas judges two million records: a few percent of a run went there.

`quick_init(cls)` gives such a class an `__init__` that sets each slot through the
slot's own descriptor (`member_descriptor.__set__`, which is what `object.__setattr__`
ends up calling) - the same fields, defaults, keyword-only signature and frozenness,
in about 60% of the time. It leaves a class alone when it is not a frozen, slotted,
keyword-only dataclass whose fields all have plain defaults (no `default_factory`,
no `__post_init__`, no field left out of `__init__`), or when its `__init__` is not a
Python function (compiled by mypyc: already native). `tests/test_frozen_init.py`
holds each class to the same behaviour as the generated `__init__`.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, TypeVar

__all__ = ["quick_init"]

_C = TypeVar("_C", bound=type)


def quick_init(cls: _C) -> _C:
    init = cls.__dict__.get("__init__")
    params = getattr(cls, "__dataclass_params__", None)
    if (not isinstance(init, types.FunctionType) or params is None or not params.frozen
            or "__slots__" not in cls.__dict__ or hasattr(cls, "__post_init__")):
        return cls
    fields = dataclasses.fields(cls)
    if any(not f.init or not f.kw_only or f.default_factory is not dataclasses.MISSING
           for f in fields):
        return cls
    env: dict[str, Any] = {}
    args, body = [], []
    for i, f in enumerate(fields):
        slot = cls.__dict__.get(f.name)
        if type(slot) is not types.MemberDescriptorType:
            return cls
        env[f"_set{i}"] = slot.__set__
        if f.default is dataclasses.MISSING:
            args.append(f.name)
        else:
            env[f"_default{i}"] = f.default
            args.append(f"{f.name}=_default{i}")
        body.append(f"    _set{i}(self, {f.name})\n")
    source = (f"def __init__(self, *, {', '.join(args)}) -> None:\n"
              + ("".join(body) or "    pass\n"))
    namespace: dict[str, Any] = {}
    exec(source, env, namespace)  # built from the class's own field names only
    quick = namespace["__init__"]
    quick.__qualname__ = f"{cls.__qualname__}.__init__"
    quick.__module__ = cls.__module__
    quick.__doc__ = init.__doc__
    cls.__init__ = quick  # type: ignore[misc]
    return cls
