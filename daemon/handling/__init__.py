"""What a stored mail is and what it does: the inbound worker, routing, and the handlers (customer replies, owner mail and commands, bounces and the rest)."""
