"""What access(5) actions asked of a message: the data restrictions hand to cleanup.

The restriction engine accumulates one immutable record per transaction (each action
found gives a new record); cleanup applies it when the message is complete.  Nothing
about it lives on the session: a transaction that ends (RSET, a new MAIL) takes its
record with it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from backupmx.envelope import Envelope, Recipient


@dataclass(frozen=True)
class MessageActions:
    """HOLD, DISCARD, REDIRECT, BCC and PREPEND of one transaction."""

    hold: bool = False
    discard: bool = False
    redirect: str | None = None  # the last REDIRECT wins, as in Postfix
    bcc: tuple[str, ...] = ()
    prepend: tuple[str, ...] = ()  # ``Name: value`` headers, above our Received:

    def held(self) -> MessageActions:
        return replace(self, hold=True)

    def discarded(self) -> MessageActions:
        return replace(self, discard=True)

    def redirected(self, address: str) -> MessageActions:
        return replace(self, redirect=address)

    def copied(self, address: str) -> MessageActions:
        """A BCC recipient added (once, however often it is asked for)."""
        return self if address in self.bcc else replace(self, bcc=(*self.bcc, address))

    def prepended(self, header: str) -> MessageActions:
        return replace(self, prepend=(*self.prepend, header))

    def apply(self, env: Envelope) -> None:
        """Hold the message, send it only to the REDIRECT address, add the BCC recipients."""
        env.hold = env.hold or self.hold
        if self.redirect is not None:
            env.recipients = [Recipient(self.redirect)]
        for address in self.bcc:
            if all(r.address != address for r in env.recipients):
                env.recipients.append(Recipient(address))


NO_ACTIONS = MessageActions()
