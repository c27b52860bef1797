"""Who is calling: the identity a client certificate proves, checked against the access table.

With client certificates required (--tls-client-ca), the TLS handshake already refused anyone
without a certificate from the trusted CA; here the certificate's identity (its first URI SAN,
else its common name) must be granted the method. Health and reflection need no grant.
"""

from __future__ import annotations

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from server.domain.access import AccessTable
from server.domain.errors import CallerNotAllowed, Unauthenticated

# Open to every caller that passed the handshake: load balancers and grpcurl need them.
OPEN_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.")


def identity_of(context: grpc.ServicerContext) -> str | None:
    """The identity the peer's verified certificate proves, or None when it sent none."""
    pems = list(context.auth_context().get("x509_pem_cert", ()))
    if not pems:
        return None
    certificate = x509.load_pem_x509_certificate(bytes(pems[0]))
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if uris:
        return str(uris[0])
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


class AccessGuard:
    """Refuses a call the access table does not grant to the caller's identity."""

    def __init__(self, table: AccessTable) -> None:
        self.table = table

    def check(self, method: str, context: grpc.ServicerContext) -> str:
        """The caller's identity, when it may call `method` ("/package.Service/Method")."""
        name = method.lstrip("/")
        identity = identity_of(context)
        if name.startswith(OPEN_SERVICES):
            return identity or ""
        if identity is None:
            raise Unauthenticated(name, "the caller's certificate names no identity")
        if not self.table.allows(identity, name):
            raise CallerNotAllowed(identity, name)
        return identity
