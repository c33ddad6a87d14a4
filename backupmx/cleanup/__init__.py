"""cleanup: from an accepted SMTP transaction to a durable queued message.

As in Postfix, smtpd speaks SMTP and hands over what the client said; cleanup owns
the message from there.  ``rewrite`` gives every envelope address its canonical form
(smtpd applies it as soon as an address is parsed, so that restrictions, verification,
the relay check, the queue and the next hop all see the same address); ``actions``
is what access(5) actions asked of the message, handed over as data; ``headers``
writes our ``Received:`` line and counts hops; ``message`` builds the envelope
(duplicate recipients dropped, HOLD, REDIRECT, BCC, DISCARD, PREPEND applied),
commits it to the spool and announces it to the queue manager.
"""
