"""Who may call what: the access table, deny by default.

A caller is a service, known by the identity its certificate proves (a URI SAN such as
`spiffe://platform/order-system`, or the certificate's common name when it has no URI). The table
grants each identity the methods it may call, by full name (`aftersales.v1.Sync/PutOrder`) or a
whole service (`aftersales.v1.Sync/*`). Anything not granted is refused.

A front end acts for a person: the table says which kind (`acts_for = "staff"` or `"buyer"`), and
every call from it must then carry that person's signed token; the person is the token's subject,
never a request field (acting_person).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from typing import Any

from server.domain.errors import NotTheAuthenticatedPerson, Unauthenticated
from server.domain.model import AccountKind, AccountRef


class AccessTableError(ValueError):
    """The access table is missing, malformed or grants a method that does not exist."""


class PersonKind(enum.StrEnum):
    """Whom a front end acts for: the merchant's staff (back office) or a buyer (buyer app)."""

    STAFF = "staff"
    BUYER = "buyer"


@dataclasses.dataclass(frozen=True)
class Person:
    """The person a call is made for, as a verified token says."""

    kind: PersonKind
    person_id: str


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who makes a call: the service (its certificate's identity) and the person it acts for."""

    identity: str
    person: Person | None = None


@dataclasses.dataclass(frozen=True)
class AccessTable:
    version: str
    # identity -> the methods it may call ("package.Service/Method" or "package.Service/*").
    grants: Mapping[str, frozenset[str]]
    # identity -> whom its calls are made for; each must carry that person's token.
    acts_for: Mapping[str, PersonKind] = dataclasses.field(default_factory=dict)

    def allows(self, identity: str, method: str) -> bool:
        """Whether `identity` may call `method` ("package.Service/Method")."""
        granted = self.grants.get(identity, frozenset())
        service = method.rpartition("/")[0]
        return method in granted or f"{service}/*" in granted


def parse(
    raw: dict[str, Any], known_methods: Iterable[str], source: str = "<access>"
) -> AccessTable:
    """The table in `raw`; every method it grants must be one of `known_methods` (or a `/*` of a
    known service), so that a typo cannot silently grant nothing."""
    raw = dict(raw)
    version = raw.pop("version", None)
    if not isinstance(version, str) or not version:
        raise AccessTableError(f"{source}: `version` must be a non-empty string")
    identities = raw.pop("identities", {})
    if raw:
        raise AccessTableError(f"{source}: unknown settings {', '.join(sorted(raw))}")
    if not isinstance(identities, dict):
        raise AccessTableError(f"{source}: [identities] must be a table")
    known = set(known_methods)
    services = {m.rpartition("/")[0] for m in known}
    grants = {}
    acts_for = {}
    for identity, entry in identities.items():
        if not identity:
            raise AccessTableError(f"{source}: an identity may not be empty")
        if not isinstance(entry, dict) or not {"methods"} <= set(entry) <= {"methods", "acts_for"}:
            raise AccessTableError(
                f"{source}: identity {identity!r} takes `methods` and optionally `acts_for`"
            )
        if "acts_for" in entry:
            try:
                acts_for[identity] = PersonKind(entry["acts_for"])
            except ValueError:
                raise AccessTableError(
                    f"{source}: acts_for of {identity!r} is staff or buyer, "
                    f"not {entry['acts_for']!r}"
                ) from None
        methods = entry["methods"]
        if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
            raise AccessTableError(f"{source}: methods of {identity!r} must be a list of names")
        for method in methods:
            service, _, name = method.rpartition("/")
            if method not in known and not (name == "*" and service in services):
                raise AccessTableError(f"{source}: {identity!r} is granted unknown {method!r}")
        grants[identity] = frozenset(methods)
    return AccessTable(version, grants, acts_for)


@dataclasses.dataclass(frozen=True)
class Scope:
    """What a person may see: a staff member their own shop's records, a buyer their own
    orders'. Anything else answers exactly as if it did not exist (NOT_FOUND), so that nobody
    can learn which ids exist elsewhere."""

    shop_id: str | None = None  # a staff member's shop
    buyer_id: str | None = None  # a buyer
    # Whether the staff member may see the shop's money (its balances and transfers): the roles
    # that may open the entry, as CheckEligibility shows the balances to them only.
    sees_money: bool = False

    def sees_shop(self, shop_id: str) -> bool:
        return self.shop_id is not None and self.shop_id == shop_id

    def sees_order(self, shop_id: str, buyer_id: str) -> bool:
        if self.shop_id is not None:
            return self.shop_id == shop_id
        return self.buyer_id is not None and self.buyer_id == buyer_id

    def sees_money_of(self, shop_id: str) -> bool:
        """The shop's money (its balances, transfers and clawbacks, which show what its wallet
        and its payees' accounts held), to those of the shop who may see it."""
        return self.sees_money and self.sees_shop(shop_id)

    def sees_account(self, ref: AccountRef) -> bool:
        """A shop's own wallet and deposit, to those who may see its money; no one's else."""
        shop_accounts = (AccountKind.ANXIN_WALLET, AccountKind.DEPOSIT)
        return ref.kind in shop_accounts and self.sees_money_of(ref.owner_id)


def acting_person(
    caller: Caller | None, kind: PersonKind, named: str, *, changes: bool = False
) -> str:
    """Who acts in a call that names `named` as its staff member or buyer: the person of the
    caller's token when there is one (a request naming someone else is refused). Without one,
    the name the request gives, for reads (an engineer's console checking an order for its
    operator) and on a development server that authenticates nobody; an authenticated service
    that `changes` something for a person must send that person's token."""
    person = caller.person if caller is not None else None
    if person is None:
        if changes and caller is not None and caller.identity:
            raise NotTheAuthenticatedPerson(
                named, f"{caller.identity} acts for no {kind.value}: a change needs their token"
            )
        return named
    if person.kind is not kind:
        raise NotTheAuthenticatedPerson(person.person_id, f"a {kind.value} is needed here")
    if named and named != person.person_id:
        raise NotTheAuthenticatedPerson(
            person.person_id, f"the request names {named}, the token {person.person_id}"
        )
    return person.person_id


def authenticated_person(caller: Caller | None, kind: PersonKind, method: str) -> str:
    """The person of the caller's token, in a call that answers a person about their own
    records only (the buyer's order page): without a token nobody is answered, whoever calls
    (deny by default), and a token of the other kind of person is refused."""
    person = caller.person if caller is not None else None
    if person is None:
        why = f"no token: send the {kind.value}'s `authorization: Bearer <token>`"
        raise Unauthenticated(method, why, person=True)
    if person.kind is not kind:
        raise NotTheAuthenticatedPerson(person.person_id, f"a {kind.value} is needed here")
    return person.person_id
