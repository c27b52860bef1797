"""Who a refused call came from, for its log line: the identity its certificate proves."""

from __future__ import annotations

from server.domain.access import Caller
from server.grpc import interceptors


class Context:
    def __init__(self, certificates=None, fails=False):
        self.certificates = certificates or []
        self.fails = fails

    def auth_context(self):
        if self.fails:
            raise ValueError("a certificate that cannot be read")
        return {"x509_pem_cert": self.certificates}


def test_a_refused_caller_without_a_certificate_is_nobody():
    assert interceptors._certified(Context()) is None


def test_a_refused_caller_is_its_certificate_s_identity(monkeypatch):
    monkeypatch.setattr(interceptors, "identity_of", lambda context: "spiffe://platform/x")

    assert interceptors._certified(Context([b"pem"])) == Caller("spiffe://platform/x")


def test_a_certificate_that_cannot_be_read_leaves_the_refusal_as_it_was():
    # Raising here, in the refusal's handling, would lose the refusal and log the call as OK.
    assert interceptors._certified(Context(fails=True)) is None
