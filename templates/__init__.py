"""Jinja2 templates (data only): `mail/` for notifications, `page/` for the web.

A package only so that a regular (non-editable) install ships them beside
`daemon/` and `statuspage/`, where those look for them.
"""
