"""The SRTP policy of a call (required, optional, off) and what a ``sips:`` URI asks of it.

Pure and light: the service, the plugin's option checks and dialogs decide the policy
before any media module (numpy, sockets) is loaded.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SRTP_POLICIES", "srtp_policy"]

#: The SRTP policies a MediaConfig/ServiceConfig takes.
SRTP_POLICIES = ("required", "optional", "off")


def _is_sips(uri: Any) -> bool:
    if uri is None:
        return False
    scheme = getattr(uri, "scheme", None)
    if scheme is None:
        scheme = str(uri).partition(":")[0]
    return str(scheme).lower() == "sips"


def srtp_policy(policy: str | None, *uris: Any, explicit: bool = True) -> str:
    """The SRTP policy for a call or account involving *uris* (SipURI or URI strings).

    A ``sips:`` URI asks for security end to end (RFC 3261 §26.2.2): the media is
    then SRTP only, so a refused SRTP offer is never retried as plain RTP (issue 14
    finding 11).  *policy* None (or not *explicit*) follows the URIs: ``"required"``
    for ``sips:``, else ``"optional"``.  An *explicit* ``"off"``/``"optional"`` with a
    ``sips:`` URI is a contradiction and raises ValueError naming it.
    """
    if policy is not None and policy not in SRTP_POLICIES:
        raise ValueError("srtp must be 'required', 'optional' or 'off'")
    sips = [str(uri) for uri in uris if _is_sips(uri)]
    if not sips:
        return policy or "optional"
    if policy not in (None, "required") and explicit:
        raise ValueError(
            f"srtp={policy!r} with the sips: URI {sips[0][:80]!r}: sips: requires SRTP "
            "(RFC 3261 §26.2.2); use srtp='required' or a sip: URI"
        )
    return "required"
