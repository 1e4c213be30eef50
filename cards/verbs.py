"""``Action.Execute`` verbs, shared by the card builders and the invoke routes."""

CONFIRM = "deprovision.confirm"
CANCEL = "deprovision.cancel"
REFRESH = "deprovision.refresh"
RETRY = "deprovision.retry"
SELECT = "deprovision.select"
APPROVE = "approval.approve"
REJECT = "approval.reject"

#: Bulk requests (their card data carries ``batchId``; ``REFRESH`` with a ``batchId`` refreshes a bulk card).
BULK_CONFIRM = "bulk.confirm"
BULK_CANCEL = "bulk.cancel"
BULK_APPROVE = "bulk.approve"
BULK_REJECT = "bulk.reject"

BULK = (BULK_CONFIRM, BULK_CANCEL, BULK_APPROVE, BULK_REJECT)

ALL = (CONFIRM, CANCEL, REFRESH, RETRY, SELECT, APPROVE, REJECT, BULK_CONFIRM, BULK_CANCEL, BULK_APPROVE, BULK_REJECT)

#: Input ids on the cards.
REASON_INPUT = "reason"
COMMENT_INPUT = "comment"
