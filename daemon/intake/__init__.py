"""The doors mail comes in by: SMTP, LMTP, IMAP and the pipe.

Each does the same three things: check size and recipients, commit the raw
bytes through the spool, and only then acknowledge. Real work happens later,
in the inbound worker reading from the store.
"""
