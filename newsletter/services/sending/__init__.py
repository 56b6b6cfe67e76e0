"""Email sends: from a published article to exactly one email per eligible subscriber.

The `Delivery` table is the outbox and the ledger. Publishing inserts one pending row
per reader in one statement (`sends.py`). Workers then repeatedly claim a chunk of
pending rows (`claiming.py`: `SELECT ... FOR UPDATE SKIP LOCKED`, so any number of
worker processes on any number of machines share a send), re-check each reader at
claim time, render the email once per segment, and hand the chunk over on several
connections at once (`handover.py`: SMTP with pipelining, or a provider's batch API,
`providers.py`), committing the sent-marks in batches as the server accepts the
messages (`marking.py`). The sweeper (`sweeping.py`) hands on a dead worker's claims;
`progress.py` counts for the admin.

Exactly once: a delivery is handed to the mail server only while this worker holds its
claim, and marked sent after the server accepted it. A claim is a lease: a random token
(whose claim it is) and an expiry that the worker renews every EMAIL_CLAIM_TIMEOUT / 5
seconds while it sends (`_ClaimKeeper`), so a slow worker keeps its chunk however long
it takes, and the sweeper hands on a dead worker's chunk once the lease runs out
(EMAIL_CLAIM_TIMEOUT, 20 s by default). A worker that cannot renew (its database is
unreachable) stops sending from the chunk at half the timeout.

The window for a duplicate: a worker process never has more than EMAIL_SEND_MARK_BATCH
(64) messages handed to the mail server without a committed sent-mark; marks are
committed within EMAIL_SEND_MARK_INTERVAL (5 ms) of the server's acceptance or as soon
as a batch is full. A mark that fails because the database connection dropped (a
restart, a failover, a killed backend) is written again over a new connection until it
lands, so a connection loss alone costs nothing. A reader gets a second copy only when
the worker dies (or gives up after `_MARK_RETRY_FOR`) with marks not yet committed: at
most one batch per worker process. Through a provider's batch API the unit is the call:
at most the recipients of the calls in flight (EMAIL_SEND_CONNECTIONS calls of up to
the provider's batch size). The sweeper then returns those claims to pending and the
messages go out again, with the same Message-ID. A late mark still counts while nobody
has claimed the delivery again.

When the mail server cannot be reached or drops the connection and a reconnect fails,
that connection stops; when the chunk's connections all stop, the deliveries they had
not tried go back to pending without an attempt counted against them, and the sweeper
restarts the send a sweep interval later. A refusal that says the mailbox does not
exist (5.1.x, 5.2.1) marks the reader bounced, as the provider webhooks do; one about
the message or the sender fails the delivery only.
"""

from newsletter.services.sending.claiming import (
    Claim,
    claim_chunk,
    claim_timeout,
    database_now,
    due_deliveries,
)
from newsletter.services.sending.handover import send_chunk
from newsletter.services.sending.marking import ChunkResult
from newsletter.services.sending.progress import SendProgress, send_progress
from newsletter.services.sending.refusals import (
    BOUNCED,
    MAX_ATTEMPTS,
    PERMANENT,
    RETRY_BASE,
    TEMPORARY,
    retry_delay,
)
from newsletter.services.sending.sends import (
    ACTIVE_SEND_STATUSES,
    SendError,
    audience,
    cancel_send,
    continue_send,
    create_email_send,
    delivery_counts,
    finish_send_if_done,
    pause_send,
    resume_send,
    retry_failed_deliveries,
    send_test_email,
    start_send,
)
from newsletter.services.sending.sweeping import SweepResult, sweep_email_sends

__all__ = [
    "ACTIVE_SEND_STATUSES",
    "BOUNCED",
    "MAX_ATTEMPTS",
    "PERMANENT",
    "RETRY_BASE",
    "TEMPORARY",
    "ChunkResult",
    "Claim",
    "SendError",
    "SendProgress",
    "SweepResult",
    "audience",
    "cancel_send",
    "claim_chunk",
    "claim_timeout",
    "continue_send",
    "create_email_send",
    "database_now",
    "delivery_counts",
    "due_deliveries",
    "finish_send_if_done",
    "pause_send",
    "resume_send",
    "retry_delay",
    "retry_failed_deliveries",
    "send_chunk",
    "send_progress",
    "send_test_email",
    "start_send",
    "sweep_email_sends",
]
