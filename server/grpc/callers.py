"""Who is calling: the identity a client certificate proves, checked against the access table.

With client certificates required (--tls-client-ca), the TLS handshake already refused anyone
without a certificate from the trusted CA; here the certificate's identity (its first URI SAN,
else its common name) must be granted the method. Health and reflection need no grant.
"""

from __future__ import annotations

import contextvars
import functools

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from server.domain.access import AccessTable, Caller, Person
from server.domain.errors import CallerNotAllowed, NotTheAuthenticatedPerson, Unauthenticated
from server.domain.model import NOBODY, Actor
from server.grpc.tokens import TokenRefused, TokenVerifier, authorization

# The caller of the call this thread serves, set by the interceptor for the servicers.
current_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "current_caller", default=None
)

# Open to every caller that passed the handshake: load balancers and grpcurl need them.
OPEN_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.")


def viewer() -> Person | None:
    """The person the call being served is made for, if its caller acts for one."""
    caller = current_caller.get()
    return caller.person if caller is not None else None


def actor() -> Actor:
    """Who makes the call being served, as mutations record it."""
    caller = current_caller.get()
    if caller is None:
        return NOBODY
    person = caller.person
    return Actor(caller.identity, f"{person.kind.value}:{person.person_id}" if person else "")


def identity_of(context: grpc.ServicerContext) -> str | None:
    """The identity the peer's verified certificate proves, or None when it sent none."""
    pems = list(context.auth_context().get("x509_pem_cert", ()))
    return _identity_in(bytes(pems[0])) if pems else None


@functools.lru_cache(maxsize=1024)
def _identity_in(pem: bytes) -> str | None:
    """The identity a certificate proves. Cached: a connection's calls all present the same
    certificate, and parsing it costs more than the rest of the check."""
    certificate = x509.load_pem_x509_certificate(pem)
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if uris:
        return str(uris[0])
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return None
    common_name = str(names[0].value)
    # Only a URI SAN proves a URI identity: a CN that looks like one proves nothing.
    return None if "://" in common_name else common_name


# The methods whose request names the person acting (which kind of person: acting_person, in
# the servicers).
PERSON_METHODS = frozenset(
    {
        "aftersales.v1.AfterSalesEntry/CheckEligibility",
        "aftersales.v1.AfterSalesEntry/BatchCheckEligibility",
        "aftersales.v1.AfterSalesEntry/OpenEntry",
        "aftersales.v1.AfterSalesEntry/ApplyAfterSales",
    }
)


class PersonGuard:
    """A server that authenticates no caller (no client certificates: development, the demo)
    still wants the person a call acts for to prove who they are: the methods that name a staff
    member or a buyer need that person's token, and a token sent with any other call scopes what
    it sees."""

    def __init__(self, tokens: TokenVerifier) -> None:
        self.tokens = tokens

    def check(self, method: str, context: grpc.ServicerContext) -> Caller:
        name = method.lstrip("/")
        metadata = context.invocation_metadata()
        if name not in PERSON_METHODS and authorization(metadata) is None:
            return Caller("")
        try:
            return Caller("", self.tokens.person(metadata))
        except TokenRefused as e:
            raise Unauthenticated(name, str(e), person=True) from None


class AccessGuard:
    """Refuses a call the access table does not grant to the caller's identity, whose person's
    token (for a caller that acts for one) does not verify, or that sends a person's token from
    a caller that acts for no one."""

    def __init__(self, table: AccessTable, tokens: TokenVerifier | None) -> None:
        if table.acts_for and tokens is None:
            raise ValueError("the access table has callers acting for people: tokens are needed")
        self.table = table
        self.tokens = tokens

    def check(self, method: str, context: grpc.ServicerContext) -> Caller:
        """The caller, when it may call `method` ("/package.Service/Method")."""
        name = method.lstrip("/")
        identity = identity_of(context)
        if name.startswith(OPEN_SERVICES):
            return Caller(identity or "")
        if identity is None:
            raise Unauthenticated(name, "the caller's certificate names no identity")
        if not self.table.allows(identity, name):
            raise CallerNotAllowed(identity, name)
        kind = self.table.acts_for.get(identity)
        if kind is None:
            if authorization(context.invocation_metadata()) is not None:
                # Its calls are its own: a person's token from it would be silently ignored,
                # and the call answered with the service's wider view than the token's.
                raise CallerNotAllowed(
                    identity,
                    name,
                    f"{identity} acts for no one (the access table's acts_for): it may not send "
                    "`authorization` metadata (a person's token)",
                )
            return Caller(identity)
        if self.tokens is None:  # refused at construction; closed all the same
            raise Unauthenticated(name, "no token can be verified here", person=True)
        try:
            person = self.tokens.person(context.invocation_metadata())
        except TokenRefused as e:
            raise Unauthenticated(name, str(e), person=True) from None
        if person.kind is not kind:
            raise NotTheAuthenticatedPerson(
                person.person_id,
                f"{identity} acts for a {kind.value}, the token is a {person.kind.value}'s",
            )
        return Caller(identity, person)
