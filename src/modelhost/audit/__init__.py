"""The audit log: every state change, who made it, from where, and how it ended."""
