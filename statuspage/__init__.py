"""ordermail's web side: the customers' status pages and the owner's dashboard.

Built by a function that takes the settings and the store (see STYLE.md:
thin web layer). The pages arrive with the status-page release; until then
`ordermail serve` opens no web listener.
"""
