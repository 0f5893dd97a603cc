"""Delivering packages exactly once: the last checks, the claim, the upload over SFTP,
the confirmation in the ledger, batches of organisations and the notices sent.
"""

from .._exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "allowed": (
        "AgreementRefused", "PasswordRotated", "PolicyChanged", "ReviewOverdue",
        "check_policy", "check_still_allowed", "refusal", "review_overdue_message",
    ),
    "attempt": ("CLAIM_LEASE", "deliver", "deliver_each",),
    "batches": ("batch_deliveries", "failed",),
    "claims": ("claim_key", "failure_of", "slot_recipients",),
    "notices": (
        "Email", "deadline_alert", "delivery_notice", "ledger_alert", "ledger_head",
        "rotation_notice", "signal_alert",
    ),
    "planned": ("Delivery",),
    "sftp_sessions": ("Sessions",),
    "sftp_target": ("SftpTarget",),
})
