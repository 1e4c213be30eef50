"""``Action.Execute`` verbs, shared by the card builders and the invoke routes."""

CONFIRM = "deprovision.confirm"
CANCEL = "deprovision.cancel"
REFRESH = "deprovision.refresh"
RETRY = "deprovision.retry"
SELECT = "deprovision.select"
APPROVE = "approval.approve"
REJECT = "approval.reject"

ALL = (CONFIRM, CANCEL, REFRESH, RETRY, SELECT, APPROVE, REJECT)

#: Input ids on the cards.
REASON_INPUT = "reason"
COMMENT_INPUT = "comment"
