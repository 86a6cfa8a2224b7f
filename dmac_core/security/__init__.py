"""Who may do what: roles, the user directory, sign-in throttling, sessions and the audit log."""
