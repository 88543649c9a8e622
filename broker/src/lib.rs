//! Placeholder: the broker arrives with the replicated-ledger issue.
