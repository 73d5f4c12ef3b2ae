"""Mail going out: notifications written from templates, and the outbox that delivers them."""
