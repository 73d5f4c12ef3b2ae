"""Payments: PayPal IPN, bank statements, the GiroCode, and the schedule for unpaid orders."""
