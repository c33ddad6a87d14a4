"""Alerts to the administrator: mail held, backlog drained, old mail, low disk, quarantine.

``decide`` says when (pure, over a time it is given), ``alert`` what an alert says in
the log, the webhook's JSON and the postmaster's mail, ``send`` delivers the last two
off the mail path, and ``watch`` is the master's shell that feeds the decisions.
"""

from backupmx.alerts.watch import Alerts

__all__ = ["Alerts"]
