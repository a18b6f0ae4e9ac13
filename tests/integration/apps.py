"""IDialog classes that ``twistd voip --dialog tests.integration.apps.<Class>`` loads in tests."""

from __future__ import annotations

from voiptwisted.sip.dialog import Dialog


class DeclineDialog(Dialog):
    """Declines every call with 603 Decline (RFC 3261 §21.6.2), a status no --app produces."""

    def call_received(self) -> None:
        self.reject(603)
