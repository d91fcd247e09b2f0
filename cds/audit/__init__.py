"""The audit trail: who did what to which study, when, append-only.

Every stage records its acts through one ``AuditTrail`` (``Node.audit``):

    node.audit.record(AuditEvent.INSTANCES_RECEIVED, who="AE:ORTHANC",
                      where="10.1.2.3", study_key=key, detail={"instances": 40})

Records carry no patient data: study keys (pseudonymous), AE titles, user
names, addresses, counts. They are hash-chained (``cds audit verify``), can be
rendered as DICOM audit messages (``atna``) and forwarded as syslog over TLS
(``syslog``). ``cds audit`` reads them back.
"""

from __future__ import annotations

from cds.audit.events import AuditEvent, AuditOutcome
from cds.audit.trail import AuditRecord, AuditTrail, NullAuditTrail, cli_actor

__all__ = ["AuditEvent", "AuditOutcome", "AuditRecord", "AuditTrail", "NullAuditTrail", "cli_actor"]
