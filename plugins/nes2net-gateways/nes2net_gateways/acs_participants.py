"""Which channel each Call Automation participant's audio goes to.

An *unmixed* stream carries up to four participants' audio, each ``AudioData`` naming its
``participantRawID`` (``4:+14255550123`` a phone number, ``8:acs:...`` an ACS user,
``8:orgid:...`` a Teams user, ``28:...`` a bot). One channel holds one voice: the customer
(the participant the URL's ``customer`` parameter names, else the first whose raw id starts
with one of ``customer_id_prefixes``) gets the customer role, the first other participant
heard ``agent``, a third and a fourth (a supervisor, a consulted party) ``participant_3`` and
``participant_4``: channels opened only when such a participant is heard
(``CallStart.open_on_audio``), so a two-party call has no summaries for them. A *mixed*
stream (no participant) is one mix of everyone, scored as the customer with
``metadata.mixed``.
"""

from __future__ import annotations

from typing import Any

from nes2net_stream.service.errors import ProtocolError

#: roles of the participants other than the customer, in the order they are first heard
OTHER_ROLES = ("agent", "participant_3", "participant_4")
#: roles whose channels open at their first audio (a party who may never be heard)
LATE_ROLES = frozenset({"participant_3", "participant_4"})
PSTN_PREFIX = "4:"


class ParticipantChannels:
    """Participant raw id -> channel role for one stream (see the module docstring).

    Attributes:
        roles: every channel role of the call, the customer's first.
        metadata: the call's metadata (set at the start; updated as participants appear).
        dropped: participants heard after every channel was taken (more than four).
        unknown_kinds: message kinds seen that the gateway does not know.
    """

    def __init__(self, customer_role: str, prefixes: list[str], customer_id: str | None):
        self.customer_role = customer_role
        self.prefixes = tuple(prefixes)
        self.customer_id = customer_id or None
        self.roles = (customer_role, *OTHER_ROLES)
        self.metadata: dict[str, Any] = {}
        self.dropped = 0
        self.unknown_kinds: set[str] = set()
        self._assigned: dict[str | None, str | None] = {}
        self._mode: str | None = None

    def _is_customer(self, raw_id: str) -> bool:
        if self.customer_id is not None:
            return raw_id == self.customer_id
        return raw_id.startswith(self.prefixes)

    def _free_role(self, raw_id: str) -> str | None:
        taken = set(self._assigned.values())
        if self.customer_role not in taken and self._is_customer(raw_id):
            return self.customer_role
        return next((r for r in OTHER_ROLES if r not in taken), None)

    def _check_mode(self, mixed: bool) -> None:
        mode = "mixed" if mixed else "unmixed"
        if self._mode is None:
            self._mode = mode
        elif self._mode != mode:
            raise ProtocolError("bad_message", "mixed and unmixed AudioData on one stream")

    def channel_of(self, raw_id: str | None) -> tuple[str | None, bool]:
        """The channel of a participant's audio (None: not scored) and whether it is new.

        A new participant with a channel changes :attr:`metadata` (it is named in it); a new
        one without (a fifth) is counted in :attr:`dropped`; a mixed/unmixed mix-up
        raises ProtocolError ``bad_message``.
        """
        if raw_id in self._assigned:
            return self._assigned[raw_id], False
        self._check_mode(raw_id is None)
        if raw_id is None:
            self._assigned[None] = self.customer_role
            self.metadata = {**self.metadata, "mixed": True}
            return self.customer_role, True
        role = self._free_role(raw_id)
        self._assigned[raw_id] = role
        if role is None:
            self.dropped += 1
            return None, True
        custom = dict(self.metadata.get("custom") or {})
        custom["participants"] = {**custom.get("participants", {}), role: raw_id}
        meta = {**self.metadata, "custom": custom}
        if role == self.customer_role and raw_id.startswith(PSTN_PREFIX):
            meta["ani"] = raw_id[len(PSTN_PREFIX):]
        self.metadata = meta
        return role, True
